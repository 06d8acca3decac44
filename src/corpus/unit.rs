//! Units of work: an input file, a row-group range of one, or a row range inside one large row
//! group, each with a stable id that names its part files.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::corpus::parquet::{self, InputColumns};
use crate::error::Result;

/// A piece of work: an input file, a row-group range of one, or a row range inside one large
/// row group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub path: PathBuf,
    pub row_groups: Option<Range<usize>>,
    /// Rows of `row_groups` (counted from its first row) when a row group larger than a unit is
    /// split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<Range<usize>>,
    /// Stable id of the unit (from its path and range): names its part files.
    pub hash: String,
}

impl Unit {
    pub fn file(path: &Path) -> Unit {
        Unit::new(path, None)
    }

    /// A unit whose id hashes `path` as given.
    pub fn new(path: &Path, row_groups: Option<Range<usize>>) -> Unit {
        Unit::keyed(path, &path.to_string_lossy(), row_groups, None)
    }

    /// A unit whose id hashes `key` (the path as every machine names it, see
    /// [`crate::engine::plan`]) instead of the local path.
    pub fn keyed(
        path: &Path,
        key: &str,
        row_groups: Option<Range<usize>>,
        rows: Option<Range<usize>>,
    ) -> Unit {
        let mut key = key.to_string();
        if let Some(r) = &row_groups {
            key.push_str(&format!("#{}..{}", r.start, r.end));
        }
        if let Some(r) = &rows {
            key.push_str(&format!("@{}..{}", r.start, r.end));
        }
        let hash = blake3::hash(key.as_bytes()).to_hex()[..16].to_string();
        Unit {
            path: path.to_path_buf(),
            row_groups,
            rows,
            hash,
        }
    }

    /// Rows of the unit, from the file's footer.
    pub fn rows(&self) -> Result<usize> {
        if let Some(rows) = &self.rows {
            return Ok(rows.len());
        }
        let groups = parquet::row_group_rows(&self.path)?;
        let range = self.row_groups.clone().unwrap_or(0..groups.len());
        Ok(groups.get(range).map_or(0, |g| g.iter().sum()))
    }

    fn groups(&self) -> Result<Range<usize>> {
        match &self.row_groups {
            Some(r) => Ok(r.clone()),
            None => Ok(0..parquet::row_group_count(&self.path)?),
        }
    }

    pub(crate) fn open(&self, columns: &InputColumns) -> Result<parquet::DocReader> {
        parquet::open_part(&self.path, columns, self.groups()?, self.rows.clone())
    }

    /// The unit's rows' ids (see [`parquet::open_ids`]).
    pub(crate) fn open_ids(&self, columns: &InputColumns) -> Result<parquet::IdReader> {
        parquet::open_ids(&self.path, columns, self.groups()?, self.rows.clone())
    }
}
