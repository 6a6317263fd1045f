//! Campaigns: the file format ([`model`]), reading it with located errors ([`parse`]),
//! semantic checks ([`validate`]), selection ([`plan`]), the live guard ([`guard`]), probes
//! and abort conditions ([`probes`]), the executor ([`run`]), reports ([`report`]) and
//! schedules ([`schedule`]).

pub mod guard;
pub mod model;
pub mod parse;
pub mod plan;
pub mod preview;
pub mod probes;
pub mod report;
pub mod run;
pub mod schedule;
pub mod validate;

pub use model::Campaign;
pub use parse::{Diagnostic, Diagnostics, Source};
pub use report::CampaignReport;
pub use run::{CampaignRun, Control, Executor, Prepared, RunOptions};
