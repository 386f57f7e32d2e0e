//! Integration tests: the real server on port 0 against a fresh database, each test run on
//! SQLite and on PostgreSQL (`sqlite::…` and `postgres::…` variants).

mod chain;
mod helpers;

mod admin;
mod balance;
mod envelope;
mod ledger;
mod logs;
mod openapi;
mod payload_forms;
mod purchase;
mod purchase_chain;
mod sessions;
mod signatures;
