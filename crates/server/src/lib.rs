//! The External Agent API server.
//!
//! One module per area of the API, each with its routes and queries:
//! [`auth`] (sessions, signed-request verification), [`credits`] (balance, purchase), [`admin`]
//! (operator API), [`identity`] (AgentAddress), [`help`] (discovery card, docs page,
//! agent-help), [`ops`] (health, readiness, metrics), [`payments`] (x402
//! networks, verification, settlement, reconciliation). Shared pieces: [`ratelimit`] (client
//! IP and abuse limits), [`db`] (SQLite/PostgreSQL), [`ledger`] (credit ledger),
//! [`error`] (the error envelope), [`extract`] (body and path extractors), [`config`],
//! [`serve`] (HTTP connections: header-read timer, connection cap), [`deadline`] (the
//! request deadline and its commit gate).
//! [`workflows`] (workflows, workflow sessions, BYO-agent workflow schedules) and
//! [`accounts`] (accounts, API keys, budgets, the API-key + budget-key bearer).
//! [`jobs`] (the jobs board: reservations, proof, verification worker, payout).
//! [`console`] (the operator console: HTML pages over the operator API's functions).

pub mod accounts;
pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod console;
pub mod credits;
pub mod db;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod help;
pub mod identity;
pub mod instances;
pub mod jobs;
pub mod ledger;
pub mod mcp;
pub mod openapi;
pub mod ops;
pub mod payments;
pub mod ratelimit;
pub mod serve;
pub mod state;
pub mod time;
pub mod tools;
pub mod workflows;

pub use app::{Error, Server};
pub use config::ServerConfig;
pub use state::AppState;
