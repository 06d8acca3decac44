use super::*;
use std::collections::HashMap;
use std::fs::File;

fn groups(rows: &[usize]) -> Vec<GroupSize> {
    rows.iter()
        .map(|&r| GroupSize {
            rows: r,
            bytes: 10 * r as u64,
            compressed: 3 * r as u64,
        })
        .collect()
}

fn whole(groups: Range<usize>) -> Slice {
    Slice { groups, rows: None }
}

fn cut(group: usize, rows: Range<usize>) -> Slice {
    Slice {
        groups: group..group + 1,
        rows: Some(rows),
    }
}

#[test]
fn files_split_on_row_group_boundaries() {
    assert_eq!(split(&groups(&[]), 10), vec![whole(0..0)]);
    assert_eq!(split(&groups(&[4, 4, 4]), 100), vec![whole(0..3)]);
    assert_eq!(
        split(&groups(&[4, 4, 4, 4, 4]), 8),
        vec![whole(0..2), whole(2..4), whole(4..5)]
    );
    assert_eq!(split(&groups(&[8]), 8), vec![whole(0..1)]);
}

#[test]
fn row_groups_larger_than_a_unit_are_cut_into_row_ranges() {
    // 50 rows at 8 per unit: 7 ranges of 7 or 8 rows, covering the group exactly.
    let slices = split(&groups(&[3, 50, 3, 3]), 8);
    assert_eq!(slices[0], whole(0..1));
    assert_eq!(slices[1..3], [cut(1, 0..7), cut(1, 7..14)]);
    assert_eq!(slices[7], cut(1, 42..50));
    assert_eq!(slices[8..], [whole(2..4)]);
    assert_eq!(slices.len(), 9);
    assert_eq!(
        split(&groups(&[20]), 8),
        vec![cut(0, 0..6), cut(0, 6..13), cut(0, 13..20)]
    );
}

/// A plan of made-up units with the given costs.
fn plan(costs: &[u64]) -> Plan {
    Plan {
        units: costs
            .iter()
            .enumerate()
            .map(|(i, &c)| PlannedUnit {
                unit: Unit::keyed(Path::new("x.parquet"), "x.parquet", Some(i..i + 1), None),
                rows: c as usize,
                bytes: c,
                compressed_bytes: c / 2,
                file: FileIdentity::default(),
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
    crate::tools::sample::write_input_parquet(path, &docs).unwrap();
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

/// `n` rows of `(id, text)` in one row group, ids `{prefix}{i}`.
fn write_one_group(path: &Path, prefix: &str, n: usize, text: &dyn Fn(usize) -> String) {
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let texts: Vec<String> = (0..n).map(text).collect();
    let batch = arrow::array::RecordBatch::try_from_iter([
        ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
        ("text", Arc::new(StringArray::from(texts)) as ArrayRef),
    ])
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_size(n.max(1))
        .build();
    let file = File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn one_huge_row_group_is_shared_by_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.parquet");
    write_one_group(&file, "d", 20_000, &|i| {
        format!("Document {i} says little.")
    });
    let plan = Plan::new(
        std::slice::from_ref(&file),
        dir.path(),
        5_000,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(plan.units.len(), 4);
    let rows: Vec<Option<Range<usize>>> = plan.units.iter().map(|u| u.unit.rows.clone()).collect();
    assert_eq!(
        rows,
        [
            Some(0..5000),
            Some(5000..10000),
            Some(10000..15000),
            Some(15000..20000)
        ]
    );
    let partition = plan.describe(4, None);
    for s in &partition.shards {
        assert_eq!(s.totals.rows, 5_000, "shard {}", s.index);
    }
    assert!(partition.table(true).contains("rows 5000..10000"));
    // Together the units read every row once, numbered as in the file.
    let mut read = Vec::new();
    for u in &plan.units {
        for r in u.unit.open(&Default::default()).unwrap() {
            read.push(r.unwrap().row);
        }
    }
    assert_eq!(read, (0..20_000).collect::<Vec<_>>());
}

#[test]
fn columns_that_fit_no_input_are_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    write_docs(&good, 3);
    let odd = dir.path().join("odd.parquet");
    write_one_group(&odd, "o", 3, &|i| i.to_string());
    let body = InputColumns {
        text: Some("body".into()),
        sentences: None,
        ..Default::default()
    };
    let e = Plan::new(&[good.clone(), odd.clone()], dir.path(), 10, &body).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Config, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("fit none of the 2") && msg.contains("\"body\""),
        "{msg}"
    );
    // Columns that fit one file: the other is that file's problem, found when it is read.
    let plan = Plan::new(&[good, odd.clone()], dir.path(), 10, &Default::default()).unwrap();
    assert_eq!(plan.units.len(), 2);
}

#[test]
fn two_files_under_one_job_relative_path_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("real/sub")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("real/sub"), dir.path().join("link")).unwrap();
    write_docs(&dir.path().join("x.parquet"), 2);
    write_docs(&dir.path().join("real/x.parquet"), 2);
    // link/../x.parquet is real/x.parquet on disk, x.parquet relative to the job.
    let files = [
        dir.path().join("x.parquet"),
        dir.path().join("link/../x.parquet"),
    ];
    let e = Plan::new(&files, dir.path(), 10, &Default::default()).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Config, "{e}");
    assert!(e.to_string().contains("same path relative"), "{e}");
}

#[test]
fn a_rewritten_file_of_the_same_size_has_another_identity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.parquet");
    write_one_group(&path, "d", 50, &|i| format!("Alpha text {i:03}."));
    let identity = |p: &Path| {
        Plan::new(&[p.to_path_buf()], dir.path(), 100, &Default::default())
            .unwrap()
            .units[0]
            .file
            .clone()
    };
    let before = identity(&path);
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    write_one_group(&path, "d", 50, &|i| format!("Omega text {i:03}."));
    // Same size, and the same modification time (a copy that keeps times, a coarse clock):
    // the footer still tells them apart.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let after = identity(&path);
    assert_eq!(
        (after.bytes, after.modified_ns),
        (before.bytes, before.modified_ns)
    );
    assert_ne!(after.footer, before.footer);
    assert!(!before.footer.is_empty());
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
        None,
    );
    let b = Unit::keyed(
        Path::new("/srv/b/data/x.parquet"),
        "../data/x.parquet",
        None,
        None,
    );
    assert_eq!(a.hash, b.hash);
    let c = Unit::keyed(
        Path::new("/srv/b/data/x.parquet"),
        "../data/x.parquet",
        Some(0..1),
        None,
    );
    assert_ne!(a.hash, c.hash, "ranges of one file have their own ids");
    let d = Unit::keyed(
        Path::new("/srv/b/data/x.parquet"),
        "../data/x.parquet",
        Some(0..1),
        Some(0..5),
    );
    assert_ne!(c.hash, d.hash, "row ranges of one group have their own ids");
}
