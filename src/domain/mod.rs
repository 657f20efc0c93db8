//! Plain domain types and rules. Nothing in here does I/O.

pub mod access;
pub mod agenda;
pub mod attendance;
pub mod cascade;
pub mod demo;
pub mod followup;
pub mod import;
pub mod meeting;
pub mod org;
pub mod report;
