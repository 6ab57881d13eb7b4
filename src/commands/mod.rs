//! What runs on top of the core: the command line and its one-shot commands.

pub mod cli;
pub mod doctor;
pub mod plan;
pub mod report;
pub mod terminal;
pub mod usage;
