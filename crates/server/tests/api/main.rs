//! Integration tests: the real server on port 0 against a fresh database, each test run on
//! SQLite and on PostgreSQL (`sqlite::…` and `postgres::…` variants).

mod chain;
mod helpers;

mod admin;
mod attacks;
mod balance;
mod connections;
mod console;
mod contract;
mod discovery;
mod envelope;
mod identity;
mod jobs;
mod ledger;
mod logs;
mod mcp;
mod migrations;
mod openapi;
mod operations;
mod payload_forms;
mod production;
mod purchase;
mod purchase_chain;
mod rate_limits;
mod replays;
mod schedules;
mod sessions;
mod signatures;
mod startup;
mod tools;
mod tools_x402;
mod workflows;
