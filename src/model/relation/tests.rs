use super::*;
use crate::corpus::Span;
use crate::model::pool::group_max;
use tch::{Device, Kind};

fn span(start: usize, end: usize, sent: usize) -> Span {
    Span { start, end, sent }
}

#[test]
fn distances_and_contexts_follow_the_reference() {
    // Adjacent mentions are at distance 1, overlapping ones at 0, in either order.
    assert_eq!(token_distance(span(0, 2, 0), span(2, 3, 0)), 1);
    assert_eq!(token_distance(span(2, 3, 0), span(0, 2, 0)), 1);
    assert_eq!(token_distance(span(0, 2, 0), span(5, 6, 0)), 4);
    assert_eq!(token_distance(span(0, 4, 0), span(1, 2, 0)), 0);
    assert_eq!(token_distance(span(3, 4, 0), span(3, 6, 0)), 0);
    assert_eq!(context((0, 3), (3, 5)), None);
    assert_eq!(context((0, 3), (5, 7)), Some((3, 5)));
    assert_eq!(context((5, 7), (0, 3)), Some((3, 5)));
    assert_eq!(context((0, 6), (2, 3)), None);
}

/// Mentions spread over a long document (distances beyond every table), clusters, pairs.
struct Fixture {
    pool: RangeMax,
    mention_reprs: Tensor,
    entity_reprs: Tensor,
    types: Tensor,
    entity_pairs: Vec<(usize, usize)>,
    pairs: MentionPairs,
}

fn fixture(hidden: i64) -> Fixture {
    let states = Tensor::randn([60, hidden], (Kind::Float, Device::Cpu));
    let pool = RangeMax::new(&states, 60);
    let places = vec![
        MentionPlace {
            words: span(0, 2, 0),
            pieces: (0, 3),
        },
        MentionPlace {
            words: span(2, 3, 0),
            pieces: (3, 4),
        },
        MentionPlace {
            words: span(900, 901, 70),
            pieces: (20, 22),
        },
        MentionPlace {
            words: span(5000, 5003, 400),
            pieces: (40, 45),
        },
        MentionPlace {
            words: span(901, 902, 70),
            pieces: (22, 23),
        },
        MentionPlace {
            words: span(5001, 5002, 400),
            pieces: (41, 42),
        },
        MentionPlace {
            words: span(7, 9, 1),
            pieces: (8, 11),
        },
    ];
    let ranges: Vec<(usize, usize)> = places.iter().map(|p| p.pieces).collect();
    let mention_reprs = pool.query(&ranges);
    // Entities 2 and 3 have one mention: their pairs take the folded inference path.
    let clusters = vec![vec![0, 2], vec![1, 3, 5], vec![4], vec![6]];
    let members: Vec<i64> = clusters.iter().flatten().map(|&m| m as i64).collect();
    let owners: Vec<i64> = clusters
        .iter()
        .enumerate()
        .flat_map(|(e, c)| std::iter::repeat_n(e as i64, c.len()))
        .collect();
    let entity_reprs = group_max(
        &mention_reprs.index_select(0, &Tensor::from_slice(&members)),
        &Tensor::from_slice(&owners),
        4,
    );
    let entity_pairs = vec![
        (0, 1),
        (1, 0),
        (0, 2),
        (2, 0),
        (1, 2),
        (2, 1),
        (2, 3),
        (3, 2),
    ];
    let pairs = MentionPairs::build(&places, &clusters, &entity_pairs);
    Fixture {
        pool,
        mention_reprs,
        entity_reprs,
        types: Tensor::from_slice(&[2i64, 0, 1, 1]),
        entity_pairs,
        pairs,
    }
}

fn input(f: &Fixture) -> RelationInput<'_> {
    RelationInput {
        pool: &f.pool,
        mention_reprs: &f.mention_reprs,
        entity_reprs: &f.entity_reprs,
        entity_types: &f.types,
        entity_pairs: &f.entity_pairs,
        mention_pairs: &f.pairs,
    }
}

#[test]
fn mrc_split_equals_concatenation_in_any_chunking() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let mrc = Mrc::new(
        vs.root() / "relation_classification",
        16,
        &HeadConfig::default(),
        3,
        5,
    );
    let f = fixture(16);
    let input = input(&f);
    assert_eq!(f.pairs.len(), 2 * (6 + 2 + 3 + 1));
    assert!(f.pairs.token_distance.iter().any(|&d| d > 700));
    assert!(f.pairs.sentence_distance.iter().any(|&d| d > 50));

    let owner: Vec<i64> = f
        .pairs
        .offsets
        .windows(2)
        .enumerate()
        .flat_map(|(r, w)| std::iter::repeat_n(r as i64, w[1] - w[0]))
        .collect();
    let expected = group_max(
        &mrc.pair_repr_concat(&input),
        &Tensor::from_slice(&owner),
        f.entity_pairs.len() as i64,
    );
    for chunk in [1, 2, 5, 1000] {
        let (pooled, kept) = mrc.pool_pairs(&input, &mrc.tables(&input), false, chunk);
        assert!(
            pooled.allclose(&expected, 1e-5, 1e-5, false),
            "chunk {chunk}"
        );
        // Every hidden dimension is won by some mention pair of its entity pair.
        let every = Tensor::ones([f.entity_pairs.len() as i64], (Kind::Bool, Device::Cpu));
        let wins = Vec::<i64>::try_from(kept.wins(&pooled, &every)).unwrap();
        for w in f.pairs.offsets.windows(2) {
            assert!(wins[w[0]..w[1]].iter().sum::<i64>() >= 16);
        }
    }
    // Inference folds single-pair entity pairs; training does not: both equal the
    // concatenation, and every dimension of a single pair is its own win.
    let concat = mrc.classify_concat(&expected, &input);
    let every = RelationPass::Infer { threshold: 0.0 };
    for chunk in [1, 3, 1000] {
        let out = mrc.forward(&input, every, chunk);
        assert_eq!(out.logits.size(), [8, 5]);
        assert!(
            out.logits.allclose(&concat, 1e-5, 1e-5, false),
            "chunk {chunk}"
        );
        let wins = Vec::<i64>::try_from(out.wins.unwrap()).unwrap();
        assert_eq!(wins[f.pairs.offsets[6]..], [16, 16]);
        for w in f.pairs.offsets.windows(2) {
            assert!(wins[w[0]..w[1]].iter().sum::<i64>() >= 16);
        }
        let trained = mrc.forward(&input, RelationPass::Train, chunk);
        assert!(trained.wins.is_none());
    }
    // With a threshold, only entity pairs with a relation at or above it count wins (a
    // single pair's are known without counting); the counts there are unchanged.
    let all_wins = Vec::<i64>::try_from(mrc.forward(&input, every, 3).wins.unwrap()).unwrap();
    let best = Vec::<f32>::try_from(concat.sigmoid().amax(1, false)).unwrap();
    let mut sorted = best.clone();
    sorted.sort_by(f32::total_cmp);
    let threshold = sorted[best.len() / 2];
    let out = mrc.forward(&input, RelationPass::Infer { threshold }, 3);
    let wins = Vec::<i64>::try_from(out.wins.unwrap()).unwrap();
    let mut skipped = 0;
    for (r, w) in f.pairs.offsets.windows(2).enumerate() {
        let range = w[0]..w[1];
        if best[r] >= threshold || range.len() == 1 {
            assert_eq!(wins[range.clone()], all_wins[range], "entity pair {r}");
        } else {
            assert!(wins[range].iter().all(|&n| n == 0), "entity pair {r}");
            skipped += 1;
        }
    }
    assert!(
        skipped > 0,
        "the threshold {threshold} skipped no entity pair"
    );
    // Frozen, the folding products are computed once: the same logits.
    let unfrozen = mrc.forward(&input, every, 3).logits;
    let mut frozen = RelationClassifier::Mrc(mrc);
    frozen.freeze();
    let RelationClassifier::Mrc(mrc) = frozen else {
        unreachable!()
    };
    assert!(mrc.frozen.is_some());
    let out = mrc.forward(&input, every, 3).logits;
    assert!(out.allclose(&unfrozen, 1e-6, 1e-6, false));
    assert!(out.allclose(&concat, 1e-5, 1e-5, false));
    let no_dropout = mrc.without_dropout();
    let trained = no_dropout.forward(&input, RelationPass::Train, 2).logits;
    assert!(trained.allclose(&concat, 1e-5, 1e-5, false));
}

#[test]
fn grc_split_equals_concatenation() {
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let heads = HeadConfig {
        relation_head: RelationHead::Grc,
        ..HeadConfig::default()
    };
    let grc = RelationClassifier::new(&vs.root(), 16, &heads, 3, 5);
    let f = fixture(16);
    let input = input(&f);
    let split = grc
        .forward(&input, RelationPass::Infer { threshold: 0.5 }, 7)
        .logits;
    let RelationClassifier::Grc(g) = &grc else {
        panic!("GRC expected")
    };
    assert!(split.allclose(&g.forward_concat(&input), 1e-5, 1e-5, false));
    let names: Vec<String> = vs.variables().into_keys().collect();
    for key in [
        "entity_pair_representation.entity_embeddings.weight",
        "entity_pair_representation.entity_pair_linear.weight",
        "relation_classification.rel_classifier.weight",
    ] {
        assert!(names.contains(&key.to_string()), "{key}");
    }
    // GRC evidence: the closest mention pair of each entity pair.
    let ev = grc.evidence(&f.pairs, None);
    assert_eq!(f.pairs.head[ev[0]], 0);
    assert_eq!(f.pairs.tail[ev[0]], 1);
}
