//! What the writing stage hands its units to: the records of a finished unit and the commit
//! protocol of the output behind a small trait, so the pipeline does not depend on the run's
//! manifest (which implements it, with a file-system and an object-store back end).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::corpus::Unit;
use crate::error::Result;
use crate::output::writer::{Compression, OutputFormat};
use crate::output::PartWriter;

/// The commit protocol of an output, as the writing stage uses it: a unit's parts are staged,
/// then the unit is committed whole, or abandoned when it broke.
pub trait UnitSink: Send + Sync {
    /// A writer of the unit's parts (opened at its first part).
    fn stage(
        &self,
        unit: &Unit,
        format: OutputFormat,
        compression: Compression,
    ) -> Result<PartWriter>;
    /// Makes the unit's parts part of the tables and records it as finished.
    fn commit(&self, record: &UnitRecord) -> Result<()>;
    /// Removes what a unit that cannot be finished has written.
    fn abandon(&self, unit: &Unit, written: &[Vec<PartRecord>; 4]) -> Result<()>;
}

/// Rows and file name of one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub file: String,
    pub rows: usize,
}

/// Documents of a unit (or run) by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocCounts {
    pub ok: usize,
    pub rejected: usize,
    pub failed: usize,
}

impl DocCounts {
    pub fn add(&mut self, other: &DocCounts) {
        self.ok += other.ok;
        self.rejected += other.rejected;
        self.failed += other.failed;
    }
}

/// `_manifest/units/<hash>.json`: a finished unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub hash: String,
    pub source_file: PathBuf,
    pub row_groups: Option<Range<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Range<usize>>,
    /// Part files per table (every table is present, possibly with no parts).
    pub parts: BTreeMap<String, Vec<PartRecord>>,
    pub documents: DocCounts,
    pub finished: String,
}

impl UnitRecord {
    pub fn rows(&self, table: &str) -> usize {
        self.parts
            .get(table)
            .map_or(0, |p| p.iter().map(|p| p.rows).sum())
    }
}

/// The time now, RFC 3339 in UTC: the timestamps of unit records, leases and runs.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
