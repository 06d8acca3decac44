//! Work planning for production runs: the input files split into units (ranges of whole row
//! groups of about `input.unit_rows` rows, or row ranges of a row group larger than that), each
//! with a cost read from its Parquet footer, and the units partitioned over shards (machines),
//! deterministically and balanced by that cost.
//!
//! Every process of a sharded job computes the same plan from the same files, so shards need no
//! coordinator: shard `i` of `n` takes its part of the partition. Unit ids hash each file's path
//! relative to the job file's folder, so they stay the same wherever the job and its data are
//! mounted; units are in the order of those paths ("plan order"), the same on every machine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use indicatif::HumanBytes;
use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use serde::{Deserialize, Serialize};

use super::job::{Job, JobOverrides};
use crate::corpus::parquet::{check_columns, InputColumns};
use crate::corpus::Unit;
use crate::error::{Error, ErrorClass, Result};
use crate::paths::normalize;
use crate::store::read::Input;

/// What identifies an input file's content without reading all of it: its size, modification
/// time and a hash of its Parquet footer (row groups, column chunk offsets and sizes,
/// statistics). A rewritten file differs in at least one of them even at the same size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub bytes: u64,
    /// Nanoseconds since the Unix epoch (0 where the file system keeps no time).
    pub modified_ns: u64,
    /// blake3 of the footer's bytes; empty when the footer is unreadable.
    pub footer: String,
}

/// A unit and its estimated cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedUnit {
    #[serde(flatten)]
    pub unit: Unit,
    pub rows: usize,
    /// Uncompressed bytes of its row groups: the cost that shards are balanced by (it follows
    /// the text volume whatever codec each file was written with).
    pub bytes: u64,
    /// Bytes read from storage.
    pub compressed_bytes: u64,
    /// The unit's file, as it was when planned.
    pub file: FileIdentity,
}

/// Every unit of a job, in plan order (files by their machine-independent path, row groups
/// ascending).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub units: Vec<PlannedUnit>,
}

/// One row group's size from the footer.
struct GroupSize {
    rows: usize,
    bytes: u64,
    compressed: u64,
}

/// What the planner reads of a file: its row groups, why the job's columns do not fit it (if
/// they do not), and the hash of its footer.
struct Footer {
    groups: Vec<GroupSize>,
    misfit: Option<String>,
    hash: String,
}

/// Reads the footer of the Parquet file `input` (two reads: the tail, then the metadata; range
/// requests on an object store).
fn footer(path: &Path, input: &mut Input, columns: &InputColumns) -> Result<Footer> {
    let corrupt = |message: String| Error::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let len = input.len;
    if len < 12 {
        return Err(corrupt(format!(
            "{len} bytes are too few for a Parquet file"
        )));
    }
    let tail: [u8; 8] = input
        .read_at(len - 8, 8)?
        .try_into()
        .expect("eight bytes were read");
    // An I/O failure under the Parquet reader stays an I/O error (see `Plan::new`).
    let meta_len = FooterTail::try_new(&tail)
        .map_err(|e| Error::parquet(path, e))?
        .metadata_length() as u64;
    if meta_len + 8 > len - 4 {
        return Err(corrupt(format!(
            "the footer claims {meta_len} bytes of a {len}-byte file"
        )));
    }
    let bytes = input.read_at(len - 8 - meta_len, meta_len as usize)?;
    let meta =
        ParquetMetaDataReader::decode_metadata(&bytes).map_err(|e| Error::parquet(path, e))?;
    let file_meta = meta.file_metadata();
    let schema = parquet::arrow::parquet_to_arrow_schema(
        file_meta.schema_descr(),
        file_meta.key_value_metadata(),
    )
    .map_err(|e| Error::parquet(path, e))?;
    Ok(Footer {
        groups: meta
            .row_groups()
            .iter()
            .map(|g| GroupSize {
                rows: g.num_rows() as usize,
                bytes: g.total_byte_size() as u64,
                compressed: g.compressed_size() as u64,
            })
            .collect(),
        misfit: check_columns(&schema, columns).err(),
        hash: blake3::hash(&bytes).to_hex()[..16].to_string(),
    })
}

/// A unit's share of a file: a range of row groups, and of its rows when one row group larger
/// than a unit is cut.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slice {
    groups: Range<usize>,
    rows: Option<Range<usize>>,
}

/// Consecutive row-group ranges of about `unit_rows` rows: a group joins the current range while
/// the range stays within `unit_rows`. A group of more rows is cut into row ranges of at most
/// `unit_rows` (each unit then decodes the group's pages up to its range, a small price against
/// one machine doing the whole group while the others wait). A file without row groups is one
/// empty range: it is still a unit, whose (empty) output marks it done.
fn split(groups: &[GroupSize], unit_rows: usize) -> Vec<Slice> {
    let whole = |groups: Range<usize>| Slice { groups, rows: None };
    let mut slices = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, g) in groups.iter().enumerate() {
        if g.rows > unit_rows {
            if i > start {
                slices.push(whole(start..i));
            }
            let pieces = g.rows.div_ceil(unit_rows);
            slices.extend((0..pieces).map(|p| Slice {
                groups: i..i + 1,
                rows: Some(g.rows * p / pieces..g.rows * (p + 1) / pieces),
            }));
            (start, rows) = (i + 1, 0);
            continue;
        }
        if i > start && rows + g.rows > unit_rows {
            slices.push(whole(start..i));
            (start, rows) = (i, 0);
        }
        rows += g.rows;
    }
    if start < groups.len() || slices.is_empty() {
        slices.push(whole(start..groups.len()));
    }
    slices
}

/// `file` relative to `base` (both made absolute against the working directory, lexically, so
/// nothing is resolved on disk), with `/` separators: the part of a path that is the same on
/// every machine mounting the job and its data in the same layout (an object store URL as it is).
fn stable_key(base: &Path, file: &Path) -> String {
    // An object store URL names the object the same way on every machine.
    if crate::store::is_url(file) {
        return file.to_string_lossy().into_owned();
    }
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let (Ok(b), Ok(f)) = (std::path::absolute(base), std::path::absolute(file)) else {
        return file.to_string_lossy().into_owned();
    };
    let (b, f) = (normalize(&b), normalize(&f));
    let common = b
        .components()
        .zip(f.components())
        .take_while(|(x, y)| x == y)
        .count();
    let up = b.components().skip(common).map(|_| "..".to_string());
    let down = f
        .components()
        .skip(common)
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    up.chain(down).collect::<Vec<_>>().join("/")
}

impl Plan {
    /// The plan of a loaded job whose file is `job_path` (unit ids are relative to its folder).
    pub fn for_job(job: &Job, job_path: &Path) -> Result<Plan> {
        let base = job_path.parent().unwrap_or(Path::new(""));
        Plan::new(
            &job.input_files()?,
            base,
            job.input.unit_rows,
            &job.input.columns(),
        )
    }

    /// Splits `files` into units of about `unit_rows` rows; ids hash the paths relative to
    /// `base`. A file that fits in one unit stays a whole-file unit (`row_groups: None`).
    ///
    /// A file that `columns` do not fit is planned like the others (reading it reports the
    /// problem as that file's bad data), but columns that fit none of the readable files are
    /// the job's mistake: a configuration error before any work.
    pub fn new(
        files: &[PathBuf],
        base: &Path,
        unit_rows: usize,
        columns: &InputColumns,
    ) -> Result<Plan> {
        let mut keyed: Vec<(String, &PathBuf)> =
            files.iter().map(|f| (stable_key(base, f), f)).collect();
        keyed.sort();
        let mut units = Vec::new();
        let (mut fitting, mut misfits) = (0, Vec::<String>::new());
        for (key, path) in keyed {
            let mut input = Input::open(path)?;
            let mut identity = FileIdentity {
                bytes: input.len,
                modified_ns: input.modified_ns,
                footer: String::new(),
            };
            let footer = match footer(path, &mut input, columns) {
                Ok(footer) => footer,
                // A corrupt or truncated file is still a unit: reading it reports the error
                // (naming the file) and the other files are processed. Its size on disk stands
                // in for the cost. Other errors (I/O) end the plan: a machine that reads
                // differently must not plan differently.
                Err(e) if e.class() == ErrorClass::Data => {
                    units.push(PlannedUnit {
                        unit: Unit::keyed(path, &key, None, None),
                        rows: 0,
                        bytes: identity.bytes,
                        compressed_bytes: identity.bytes,
                        file: identity,
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            match footer.misfit {
                None => fitting += 1,
                Some(m) => misfits.push(format!("{}: {m}", path.display())),
            }
            identity.footer = footer.hash;
            let groups = &footer.groups;
            for slice in split(groups, unit_rows) {
                let part = &groups[slice.groups.clone()];
                let whole = slice.groups.len() == groups.len() && slice.rows.is_none();
                let (mut rows, mut bytes, mut compressed) = (0, 0, 0);
                for g in part {
                    (rows, bytes, compressed) =
                        (rows + g.rows, bytes + g.bytes, compressed + g.compressed);
                }
                if let Some(r) = &slice.rows {
                    // A share of one group's bytes, by its share of the rows.
                    let share = |b: u64| b * r.len() as u64 / rows.max(1) as u64;
                    (rows, bytes, compressed) = (r.len(), share(bytes), share(compressed));
                }
                units.push(PlannedUnit {
                    unit: Unit::keyed(path, &key, (!whole).then_some(slice.groups), slice.rows),
                    rows,
                    bytes,
                    compressed_bytes: compressed,
                    file: identity.clone(),
                });
            }
        }
        if let (0, Some(first)) = (fitting, misfits.first()) {
            return Err(Error::Config(format!(
                "input.id_column, input.text_column, input.sentences_column: the columns fit \
                 none of the {} readable input files (e.g. {first})",
                misfits.len()
            )));
        }
        let plan = Plan { units };
        plan.check_unique_ids()?;
        Ok(plan)
    }

    /// Unit ids name part files and staging folders: two units sharing one would delete each
    /// other's output. Paths that differ on disk but are the same relative to the job (a `..`
    /// after a symbolic link) would.
    fn check_unique_ids(&self) -> Result<()> {
        let mut seen: HashMap<&str, &Unit> = HashMap::new();
        for u in &self.units {
            if let Some(other) = seen.insert(&u.unit.hash, &u.unit) {
                return Err(Error::Config(format!(
                    "input.paths: {} and {} are different files under the same path relative \
                     to the job file (unit id {}); name them without '..' after a symbolic link",
                    other.path.display(),
                    u.unit.path.display(),
                    u.unit.hash
                )));
            }
        }
        Ok(())
    }

    /// Unit indices of each of `count` shards, each in plan order. Longest processing time
    /// first: units by cost descending (ties by id), each to the least-loaded shard (ties: the
    /// lowest index). Shard loads then differ by at most the largest unit's cost, and the result
    /// depends on nothing but the plan.
    pub fn partition(&self, count: usize) -> Vec<Vec<usize>> {
        assert!(count > 0, "a partition needs at least one shard");
        let mut order: Vec<usize> = (0..self.units.len()).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&self.units[a], &self.units[b]);
            y.bytes
                .cmp(&x.bytes)
                .then_with(|| x.unit.hash.cmp(&y.unit.hash))
        });
        let mut loads: BinaryHeap<Reverse<(u64, usize)>> =
            (0..count).map(|s| Reverse((0, s))).collect();
        let mut shards = vec![Vec::new(); count];
        for i in order {
            let Reverse((load, s)) = loads.pop().expect("count > 0");
            shards[s].push(i);
            loads.push(Reverse((load + self.units[i].bytes, s)));
        }
        for s in &mut shards {
            s.sort_unstable();
        }
        shards
    }

    /// The units `shard` processes, in plan order.
    pub fn shard(&self, shard: Shard) -> Vec<Unit> {
        self.partition(shard.count)
            .swap_remove(shard.index)
            .into_iter()
            .map(|i| self.units[i].unit.clone())
            .collect()
    }

    /// The partition over `count` shards as `jerex plan` shows it: every shard, or only `only`.
    pub fn describe(&self, count: usize, only: Option<usize>) -> Partition {
        let shards = self
            .partition(count)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|o| o == *i))
            .map(|(index, members)| {
                let units: Vec<PlannedUnit> =
                    members.iter().map(|&i| self.units[i].clone()).collect();
                ShardSummary {
                    index,
                    totals: Totals::of(&units),
                    units,
                }
            })
            .collect();
        Partition {
            shard_count: count,
            shards,
            total: Totals::of(&self.units),
        }
    }
}

/// One process's share of a job: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole job on one machine.
    pub const ALL: Shard = Shard { index: 0, count: 1 };
}

/// `--shard-index` and `--shard-count`; when not given they come from the job engine's
/// environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ShardArgs {
    /// This process's shard, from 0. Default: $JOB_COMPLETION_INDEX (Kubernetes Indexed Job),
    /// else ($SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN) / $SLURM_ARRAY_TASK_STEP (Slurm
    /// array), else 0 when there is one shard.
    #[arg(long, value_name = "I")]
    pub shard_index: Option<usize>,
    /// Number of shards. Default: $JEREX_SHARD_COUNT, else $SLURM_ARRAY_TASK_COUNT, else 1.
    #[arg(long, value_name = "N")]
    pub shard_count: Option<usize>,
}

/// Reads an environment variable (tests pass their own).
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A value and the flag or variable it came from, for error messages.
type Sourced = Option<(usize, &'static str)>;

fn config(message: String) -> Error {
    Error::Config(message)
}

/// An environment variable as a count or index; unset or blank is `None`.
fn env_usize(env: Env, name: &'static str) -> Result<Option<usize>> {
    match env(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| config(format!("{name}: '{v}' is not a non-negative integer"))),
    }
}

impl ShardArgs {
    /// This process's shard, from the flags and the real environment.
    pub fn resolve(&self) -> Result<Shard> {
        self.resolve_with(&|k| std::env::var(k).ok())
    }

    /// This process's shard, with `env` standing in for the environment. A shard index without
    /// a count (or the reverse) is an error rather than a guess: a guess would make several
    /// processes run the same units, or leave units to nobody.
    pub fn resolve_with(&self, env: Env) -> Result<Shard> {
        match (self.index_from(env)?, self.count_from(env)?) {
            (None, None) | (None, Some((1, _))) => Ok(Shard::ALL),
            (Some((i, from)), None) => Err(config(format!(
                "{from}: shard index {i} needs a shard count; pass --shard-count or set \
                 JEREX_SHARD_COUNT"
            ))),
            (None, Some((n, from))) => Err(config(format!(
                "{from}: {n} shards, but this process's shard index is unknown; pass \
                 --shard-index, or run as a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) or a \
                 Slurm array (SLURM_ARRAY_TASK_ID)"
            ))),
            (Some((i, ifrom)), Some((n, nfrom))) if i >= n => Err(config(format!(
                "{ifrom}: shard index {i} is not below the shard count {n} (from {nfrom})"
            ))),
            (Some((index, _)), Some((count, _))) => Ok(Shard { index, count }),
        }
    }

    fn count_from(&self, env: Env) -> Result<Sourced> {
        let found = match self.shard_count {
            Some(n) => Some((n, "--shard-count")),
            None => match env_usize(env, "JEREX_SHARD_COUNT")? {
                Some(n) => Some((n, "JEREX_SHARD_COUNT")),
                None => {
                    env_usize(env, "SLURM_ARRAY_TASK_COUNT")?.map(|n| (n, "SLURM_ARRAY_TASK_COUNT"))
                }
            },
        };
        if let Some((0, from)) = found {
            return Err(config(format!(
                "{from}: the shard count must be at least 1"
            )));
        }
        Ok(found)
    }

    fn index_from(&self, env: Env) -> Result<Sourced> {
        if let Some(i) = self.shard_index {
            return Ok(Some((i, "--shard-index")));
        }
        if let Some(i) = env_usize(env, "JOB_COMPLETION_INDEX")? {
            return Ok(Some((i, "JOB_COMPLETION_INDEX")));
        }
        let Some(id) = env_usize(env, "SLURM_ARRAY_TASK_ID")? else {
            return Ok(None);
        };
        // Array ids need not start at 0 (`--array=1-8`) and may step (`--array=0-14:2`).
        let min = env_usize(env, "SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = env_usize(env, "SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if id < min || !(id - min).is_multiple_of(step) {
            return Err(config(format!(
                "SLURM_ARRAY_TASK_ID: {id} is not SLURM_ARRAY_TASK_MIN ({min}) plus a multiple of \
                 SLURM_ARRAY_TASK_STEP ({step}); use a range such as --array=0-7, or pass \
                 --shard-index"
            )));
        }
        Ok(Some(((id - min) / step, "SLURM_ARRAY_TASK_ID")))
    }
}

/// Units, rows and bytes of a set of units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub units: usize,
    pub rows: usize,
    pub bytes: u64,
    pub compressed_bytes: u64,
}

impl Totals {
    fn of(units: &[PlannedUnit]) -> Totals {
        Totals {
            units: units.len(),
            rows: units.iter().map(|u| u.rows).sum(),
            bytes: units.iter().map(|u| u.bytes).sum(),
            compressed_bytes: units.iter().map(|u| u.compressed_bytes).sum(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardSummary {
    pub index: usize,
    pub totals: Totals,
    pub units: Vec<PlannedUnit>,
}

/// What `jerex plan` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub shard_count: usize,
    pub shards: Vec<ShardSummary>,
    /// The whole job (every shard).
    pub total: Totals,
}

impl Partition {
    /// A table of the shards and the total; `with_units` lists each shown shard's units too.
    pub fn table(&self, with_units: bool) -> String {
        let line = |name: &str, t: &Totals| {
            format!(
                "{name:<6} {:>7} {:>12} {:>11} {:>11}\n",
                t.units,
                t.rows,
                HumanBytes(t.bytes).to_string(),
                HumanBytes(t.compressed_bytes).to_string()
            )
        };
        let mut s = format!(
            "{:<6} {:>7} {:>12} {:>11} {:>11}\n",
            "shard", "units", "rows", "bytes", "compressed"
        );
        for shard in &self.shards {
            s.push_str(&line(&shard.index.to_string(), &shard.totals));
            if with_units {
                for u in &shard.units {
                    let mut groups = u
                        .unit
                        .row_groups
                        .as_ref()
                        .map_or("all row groups".to_string(), |r| {
                            format!("row groups {}..{}", r.start, r.end)
                        });
                    if let Some(r) = &u.unit.rows {
                        groups.push_str(&format!(", rows {}..{}", r.start, r.end));
                    }
                    s.push_str(&format!(
                        "  {}  {} ({groups}): {} rows, {}\n",
                        u.unit.hash,
                        u.unit.path.display(),
                        u.rows,
                        HumanBytes(u.bytes)
                    ));
                }
            }
        }
        s.push_str(&line("total", &self.total));
        s.push_str(&format!("{} shard(s)\n", self.shard_count));
        s
    }
}

/// `jerex plan`: how a job's units split over shards, without running anything.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    #[command(flatten)]
    pub overrides: JobOverrides,
    /// Without --shard-index every shard is shown; with it, that shard and its units.
    #[command(flatten)]
    pub shard: ShardArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `jerex plan`: prints the partition (a table, or JSON with `--json`) and returns it.
pub fn run(args: &PlanArgs) -> Result<Partition> {
    let job = Job::load_with(&args.job, &args.overrides)?;
    // The environment's shard index is ignored: a plan shows every shard unless one is asked for.
    let count = match args.shard.shard_index {
        Some(_) => args.shard.resolve()?.count,
        None => args
            .shard
            .count_from(&|k| std::env::var(k).ok())?
            .map_or(1, |(n, _)| n),
    };
    let partition = Plan::for_job(&job, &args.job)?.describe(count, args.shard.shard_index);
    if args.json {
        let text = serde_json::to_string_pretty(&partition)
            .map_err(|e| config(format!("plan as JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", partition.table(args.shard.shard_index.is_some()));
    }
    Ok(partition)
}

#[cfg(test)]
mod tests;
