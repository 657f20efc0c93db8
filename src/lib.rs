//! muster orchestrates tiered video dispatch meetings (视频调度会): the cascade of meetings
//! from province to enterprise, their LiveKit rooms, invitations, attendance and follow-ups.

pub mod agendas;
pub mod attachments;
pub mod auth;
pub mod bench;
pub mod board;
pub mod config;
pub mod directory;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod followups;
pub mod http;
pub mod jobs;
pub mod livekit;
pub mod notify;
pub mod reports;
pub mod rollup_bench;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod web;
