//! Work planning for production runs: the input files split into units (ranges of whole row
//! groups of about `input.unit_rows` rows), each with a cost read from its Parquet footer, and
//! the units partitioned over shards (machines), deterministically and balanced by that cost.
//!
//! Every process of a sharded job computes the same plan from the same files, so shards need no
//! coordinator: shard `i` of `n` takes its part of the partition. Unit ids hash each file's path
//! relative to the job file's folder, so they stay the same wherever the job and its data are
//! mounted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use parquet::file::metadata::ParquetMetaDataReader;
use serde::Serialize;

use super::job::{normalize, Job, JobOverrides};
use super::pipeline::Unit;
use crate::error::{Error, Result};

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
}

/// Every unit of a job, in input order (files sorted, row groups ascending).
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

fn footer(path: &Path) -> Result<Vec<GroupSize>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // An I/O failure under the Parquet reader stays an I/O error (see `Plan::new`).
    let meta = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| Error::parquet(path, e))?;
    Ok(meta
        .row_groups()
        .iter()
        .map(|g| GroupSize {
            rows: g.num_rows() as usize,
            bytes: g.total_byte_size() as u64,
            compressed: g.compressed_size() as u64,
        })
        .collect())
}

/// Consecutive row-group ranges of about `unit_rows` rows: a group joins the current range while
/// the range stays within `unit_rows`, so a range exceeds it only when a single group does. A file
/// without row groups is one empty range: it is still a unit, whose (empty) output marks it done.
fn split(groups: &[GroupSize], unit_rows: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, g) in groups.iter().enumerate() {
        if i > start && rows + g.rows > unit_rows {
            ranges.push(start..i);
            (start, rows) = (i, 0);
        }
        rows += g.rows;
    }
    ranges.push(start..groups.len());
    ranges
}

/// `file` relative to `base` (both made absolute against the working directory, lexically, so
/// nothing is resolved on disk), with `/` separators: the part of a path that is the same on
/// every machine mounting the job and its data in the same layout.
fn stable_key(base: &Path, file: &Path) -> String {
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
        Plan::new(&job.input_files()?, base, job.input.unit_rows)
    }

    /// Splits `files` into units of about `unit_rows` rows; ids hash the paths relative to
    /// `base`. A file that fits in one unit stays a whole-file unit (`row_groups: None`).
    pub fn new(files: &[PathBuf], base: &Path, unit_rows: usize) -> Result<Plan> {
        let mut units = Vec::new();
        for path in files {
            let key = stable_key(base, path);
            let groups = match footer(path) {
                Ok(groups) => groups,
                // A corrupt or truncated file is still a unit: reading it reports the error
                // (naming the file) and the other files are processed. Its size on disk stands
                // in for the cost. Other errors (I/O) end the plan: a machine that reads
                // differently must not plan differently.
                Err(e) if e.class() == crate::error::ErrorClass::Data => {
                    let len = std::fs::metadata(path)
                        .map_err(|e| Error::io(path, e))?
                        .len();
                    units.push(PlannedUnit {
                        unit: Unit::keyed(path, &key, None),
                        rows: 0,
                        bytes: len,
                        compressed_bytes: len,
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            for range in split(&groups, unit_rows) {
                let part = &groups[range.clone()];
                let whole = range.len() == groups.len();
                units.push(PlannedUnit {
                    unit: Unit::keyed(path, &key, (!whole).then_some(range)),
                    rows: part.iter().map(|g| g.rows).sum(),
                    bytes: part.iter().map(|g| g.bytes).sum(),
                    compressed_bytes: part.iter().map(|g| g.compressed).sum(),
                });
            }
        }
        Ok(Plan { units })
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

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (b as f64, 0);
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl Partition {
    /// A table of the shards and the total; `with_units` lists each shown shard's units too.
    pub fn table(&self, with_units: bool) -> String {
        let line = |name: &str, t: &Totals| {
            format!(
                "{name:<6} {:>7} {:>12} {:>11} {:>11}\n",
                t.units,
                t.rows,
                human_bytes(t.bytes),
                human_bytes(t.compressed_bytes)
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
                    let groups = u
                        .unit
                        .row_groups
                        .as_ref()
                        .map_or("all row groups".to_string(), |r| {
                            format!("row groups {}..{}", r.start, r.end)
                        });
                    s.push_str(&format!(
                        "  {}  {} ({groups}): {} rows, {}\n",
                        u.unit.hash,
                        u.unit.path.display(),
                        u.rows,
                        human_bytes(u.bytes)
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
    super::ensure_samples(&job)?;
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn groups(rows: &[usize]) -> Vec<GroupSize> {
        rows.iter()
            .map(|&r| GroupSize {
                rows: r,
                bytes: 10 * r as u64,
                compressed: 3 * r as u64,
            })
            .collect()
    }

    #[test]
    fn files_split_on_row_group_boundaries() {
        assert_eq!(split(&groups(&[]), 10), vec![0..0]);
        assert_eq!(split(&groups(&[4, 4, 4]), 100), vec![0..3]);
        assert_eq!(split(&groups(&[4, 4, 4, 4, 4]), 8), vec![0..2, 2..4, 4..5]);
        // A group larger than the target is a unit of its own, never cut.
        assert_eq!(split(&groups(&[3, 50, 3, 3]), 8), vec![0..1, 1..2, 2..4]);
        assert_eq!(split(&groups(&[50]), 8), vec![0..1]);
    }

    /// A plan of made-up units with the given costs.
    fn plan(costs: &[u64]) -> Plan {
        Plan {
            units: costs
                .iter()
                .enumerate()
                .map(|(i, &c)| PlannedUnit {
                    unit: Unit::keyed(Path::new("x.parquet"), "x.parquet", Some(i..i + 1)),
                    rows: c as usize,
                    bytes: c,
                    compressed_bytes: c / 2,
                })
                .collect(),
        }
    }

    #[test]
    fn partitions_are_disjoint_complete_balanced_and_deterministic() {
        // Pseudo-random costs spanning three orders of magnitude, with ties.
        let costs: Vec<u64> = (0..97u64)
            .map(|i| 1 + (i * 7919 % 1000) / (1 + i % 4))
            .collect();
        let p = plan(&costs);
        let max_unit = *costs.iter().max().unwrap();
        for count in [1, 2, 3, 7, 97, 150] {
            let shards = p.partition(count);
            assert_eq!(shards.len(), count);
            let mut all: Vec<usize> = shards.concat();
            all.sort_unstable();
            assert_eq!(all, (0..costs.len()).collect::<Vec<_>>(), "count {count}");
            let loads: Vec<u64> = shards
                .iter()
                .map(|s| s.iter().map(|&i| costs[i]).sum())
                .collect();
            let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(hi - lo <= max_unit, "count {count}: loads {loads:?}");
            for s in &shards {
                assert!(s.windows(2).all(|w| w[0] < w[1]), "plan order: {s:?}");
            }
            assert_eq!(shards, p.partition(count), "deterministic");
            // A plan built in another order (as from another listing) partitions the same units.
            let mut reversed = p.clone();
            reversed.units.reverse();
            let ids = |plan: &Plan, shards: Vec<Vec<usize>>| -> Vec<Vec<String>> {
                shards
                    .into_iter()
                    .map(|s| {
                        let mut v: Vec<String> =
                            s.iter().map(|&i| plan.units[i].unit.hash.clone()).collect();
                        v.sort();
                        v
                    })
                    .collect()
            };
            assert_eq!(
                ids(&p, p.partition(count)),
                ids(&reversed, reversed.partition(count))
            );
        }
        // Worked by hand: 3->0, 3->1, 2->0, 2->1, 2->0 (ties go to the lowest index).
        let p = plan(&[2, 3, 2, 3, 2]);
        let loads: Vec<u64> = p
            .partition(2)
            .iter()
            .map(|s| s.iter().map(|&i| p.units[i].bytes).sum())
            .collect();
        assert_eq!(loads, vec![7, 5]);
    }

    #[test]
    fn shard_selects_its_part_and_describe_adds_up() {
        let p = plan(&[5, 1, 4, 2, 3]);
        let parts = p.partition(2);
        let s1 = p.shard(Shard { index: 1, count: 2 });
        let expected: Vec<Unit> = parts[1].iter().map(|&i| p.units[i].unit.clone()).collect();
        assert_eq!(s1, expected);
        assert_eq!(p.shard(Shard::ALL).len(), 5);

        let d = p.describe(2, None);
        assert_eq!(d.shards.len(), 2);
        assert_eq!(d.total.bytes, 15);
        assert_eq!(d.total.units, 5);
        assert_eq!(d.shards[0].totals.bytes + d.shards[1].totals.bytes, 15);
        let only = p.describe(2, Some(1));
        assert_eq!(only.shards, vec![d.shards[1].clone()]);
        let table = only.table(true);
        assert!(table.contains(&s1[0].hash), "{table}");
        assert!(table.starts_with("shard"), "{table}");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn flags(index: Option<usize>, count: Option<usize>) -> ShardArgs {
        ShardArgs {
            shard_index: index,
            shard_count: count,
        }
    }

    #[test]
    fn shards_default_from_kubernetes_and_slurm() {
        let shard = |args: ShardArgs, vars: &[(&str, &str)]| args.resolve_with(&env(vars));
        let s = |index, count| Shard { index, count };
        assert_eq!(shard(flags(None, None), &[]).unwrap(), Shard::ALL);
        assert_eq!(shard(flags(Some(2), Some(4)), &[]).unwrap(), s(2, 4));
        assert_eq!(
            shard(
                flags(None, None),
                &[("JOB_COMPLETION_INDEX", "3"), ("JEREX_SHARD_COUNT", "8")]
            )
            .unwrap(),
            s(3, 8)
        );
        // Flags win over the environment.
        assert_eq!(
            shard(
                flags(Some(1), Some(2)),
                &[("JOB_COMPLETION_INDEX", "3"), ("JEREX_SHARD_COUNT", "8")]
            )
            .unwrap(),
            s(1, 2)
        );
        assert_eq!(
            shard(
                flags(None, None),
                &[
                    ("SLURM_ARRAY_TASK_ID", "5"),
                    ("SLURM_ARRAY_TASK_MIN", "1"),
                    ("SLURM_ARRAY_TASK_COUNT", "8")
                ]
            )
            .unwrap(),
            s(4, 8)
        );
        assert_eq!(
            shard(
                flags(None, None),
                &[
                    ("SLURM_ARRAY_TASK_ID", "6"),
                    ("SLURM_ARRAY_TASK_MIN", "2"),
                    ("SLURM_ARRAY_TASK_STEP", "2"),
                    ("SLURM_ARRAY_TASK_COUNT", "4")
                ]
            )
            .unwrap(),
            s(2, 4)
        );
        // One shard needs no index; blank variables count as unset.
        assert_eq!(
            shard(
                flags(None, None),
                &[("JEREX_SHARD_COUNT", "1"), ("JOB_COMPLETION_INDEX", " ")]
            )
            .unwrap(),
            Shard::ALL
        );
    }

    #[test]
    fn impossible_shards_name_the_flag_or_variable() {
        let err = |args: ShardArgs, vars: &[(&str, &str)]| {
            args.resolve_with(&env(vars)).unwrap_err().to_string()
        };
        let cases = [
            (
                flags(None, None),
                vec![("JOB_COMPLETION_INDEX", "2")],
                "JOB_COMPLETION_INDEX",
            ),
            (flags(Some(0), None), vec![], "--shard-index"),
            (flags(None, Some(4)), vec![], "--shard-count"),
            (
                flags(None, None),
                vec![("JEREX_SHARD_COUNT", "4")],
                "JEREX_SHARD_COUNT",
            ),
            (flags(Some(4), Some(4)), vec![], "--shard-index"),
            (flags(Some(0), Some(0)), vec![], "--shard-count"),
            (
                flags(None, None),
                vec![("JEREX_SHARD_COUNT", "x")],
                "JEREX_SHARD_COUNT",
            ),
            (
                flags(None, None),
                vec![("JOB_COMPLETION_INDEX", "-1"), ("JEREX_SHARD_COUNT", "2")],
                "JOB_COMPLETION_INDEX",
            ),
            (
                flags(None, None),
                vec![
                    ("SLURM_ARRAY_TASK_ID", "9"),
                    ("SLURM_ARRAY_TASK_COUNT", "8"),
                ],
                "SLURM_ARRAY_TASK_ID",
            ),
            (
                flags(None, None),
                vec![("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_MIN", "1")],
                "SLURM_ARRAY_TASK_MIN",
            ),
        ];
        for (args, vars, name) in cases {
            let e = err(args, &vars);
            assert!(e.contains(name), "{vars:?}: {e}");
            assert!(e.starts_with("configuration:"), "{e}");
        }
    }

    /// `n` one-sentence documents (the sample writer puts 128 rows in a row group).
    fn write_docs(path: &Path, n: usize) {
        let docs: Vec<crate::corpus::Document> = (0..n)
            .map(|i| crate::corpus::Document {
                id: format!("d{i}"),
                text: Some(format!("Document {i} says little.")),
                ..Default::default()
            })
            .collect();
        super::super::sample::write_input_parquet(path, &docs).unwrap();
    }

    #[test]
    fn job_files_plan_into_row_group_units_with_mount_independent_ids() {
        let root = tempfile::tempdir().unwrap();
        let mount = |name: &str| {
            let dir = root.path().join(name);
            std::fs::create_dir_all(dir.join("jobs")).unwrap();
            std::fs::create_dir_all(dir.join("data")).unwrap();
            write_docs(&dir.join("data/big.parquet"), 300);
            write_docs(&dir.join("data/small.parquet"), 20);
            std::fs::write(dir.join("data/torn.parquet"), b"PAR1 cut short").unwrap();
            std::fs::write(
                dir.join("jobs/job.toml"),
                "[input]\npaths = [\"../data/*.parquet\"]\nunit_rows = 200\n[output]\ndir = \"../out\"\n",
            )
            .unwrap();
            let job_path = dir.join("jobs/job.toml");
            Plan::for_job(&Job::load(&job_path).unwrap(), &job_path).unwrap()
        };
        let a = mount("a");
        // big: groups of 128, 128, 44 rows -> 0..1, 1..3 (172 rows <= 200); small: whole file.
        let shape: Vec<(Option<Range<usize>>, usize)> = a
            .units
            .iter()
            .map(|u| (u.unit.row_groups.clone(), u.rows))
            .collect();
        assert_eq!(
            shape,
            vec![(Some(0..1), 128), (Some(1..3), 172), (None, 20), (None, 0)]
        );
        // The torn file is planned (the run reports it) at its size on disk.
        assert_eq!(a.units[3].bytes, 14);
        assert!(a
            .units
            .iter()
            .all(|u| u.bytes > 0 && u.compressed_bytes > 0));
        assert!(a.units[1].bytes > a.units[0].bytes, "more rows, more bytes");

        let b = mount("elsewhere/b");
        let ids = |p: &Plan| {
            p.units
                .iter()
                .map(|u| u.unit.hash.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b), "same layout, same ids");
        assert_ne!(a.units[0].unit.path, b.units[0].unit.path);

        let mut job = Job::load(&root.path().join("a/jobs/job.toml")).unwrap();
        assert_eq!(job.input.unit_rows, 200);
        job.input.unit_rows = 0;
        assert!(job.validate().unwrap_err().starts_with("input.unit_rows"));
        let defaults = Job::parse("[input]\npaths = [\"x\"]\n[output]\ndir = \"o\"\n").unwrap();
        assert_eq!(defaults.input.unit_rows, 5_000);
    }

    #[test]
    fn unit_ids_do_not_depend_on_where_the_job_is_mounted() {
        let key = |base: &str, file: &str| stable_key(Path::new(base), Path::new(file));
        assert_eq!(
            key("/mnt/a/jobs", "/mnt/a/data/x.parquet"),
            "../data/x.parquet"
        );
        assert_eq!(
            key("/srv/b/jobs", "/srv/b/data/x.parquet"),
            "../data/x.parquet"
        );
        assert_eq!(
            key("/mnt/a/jobs", "/mnt/a/jobs/./in/x.parquet"),
            "in/x.parquet"
        );
        // A job given by a relative path resolves against the working directory.
        let cwd = std::env::current_dir().unwrap();
        let abs = cwd.join("data/x.parquet");
        assert_eq!(key("jobs", abs.to_str().unwrap()), "../data/x.parquet");
        assert_eq!(key("", "data/x.parquet"), "data/x.parquet");

        let a = Unit::keyed(
            Path::new("/mnt/a/data/x.parquet"),
            "../data/x.parquet",
            None,
        );
        let b = Unit::keyed(
            Path::new("/srv/b/data/x.parquet"),
            "../data/x.parquet",
            None,
        );
        assert_eq!(a.hash, b.hash);
        let c = Unit::keyed(
            Path::new("/srv/b/data/x.parquet"),
            "../data/x.parquet",
            Some(0..1),
        );
        assert_ne!(a.hash, c.hash, "ranges of one file have their own ids");
    }
}
