//! A cheap deterministic stand-in for the model, for tests and benchmarks of the engine itself.
//!
//! Its predictions depend only on each document's words (never on the batch, device or thread),
//! like the real model's should, so runs with different batching must give identical tables. It
//! can be told to fail: on batches holding given documents, on batches above a size (an
//! out-of-memory stand-in), by panicking, or on given devices.

use std::collections::HashMap;
use std::time::Duration;

use tch::Device;

use crate::corpus::Span;
use crate::engine::{Backend, BackendFactory};
use crate::error::{Error, Result};
use crate::model::{
    DocPrediction, ModelConfig, PredEntity, PredMention, PredRelation, PreparedDoc, Thresholds,
};

/// How a fake backend fails.
#[derive(Debug, Clone, Default)]
pub struct Failures {
    /// Any batch holding one of these document ids fails.
    pub poison: Vec<String>,
    /// Batches of more documents than this fail.
    pub max_docs: Option<usize>,
    /// Fail by panicking instead of returning an error (as libtorch does on out-of-memory).
    pub panic: bool,
    /// Devices whose replica fails to load.
    pub dead_devices: Vec<Device>,
}

/// Creates [`FakeBackend`]s.
#[derive(Debug, Clone)]
pub struct FakeFactory {
    pub entity_types: usize,
    pub relation_types: usize,
    pub thresholds: Thresholds,
    pub failures: Failures,
    /// Sleep per batch, so several devices really share the work in tests.
    pub delay: Duration,
}

impl FakeFactory {
    /// A fake with `config`'s type counts and thresholds that never fails and does not sleep.
    pub fn new(config: &ModelConfig) -> FakeFactory {
        FakeFactory {
            entity_types: config.entity_types.len(),
            relation_types: config.relation_types.len(),
            thresholds: config.thresholds,
            failures: Failures::default(),
            delay: Duration::ZERO,
        }
    }
}

impl BackendFactory for FakeFactory {
    fn create(&self, device: Device) -> Result<Box<dyn Backend>> {
        if self.failures.dead_devices.contains(&device) {
            return Err(Error::Device {
                device: crate::device::device_name(device),
                message: "fake device failure".into(),
            });
        }
        Ok(Box::new(FakeBackend {
            factory: self.clone(),
        }))
    }
}

pub struct FakeBackend {
    factory: FakeFactory,
}

impl FakeBackend {
    fn check(&self, batch: &[PreparedDoc]) -> Result<()> {
        std::thread::sleep(self.factory.delay);
        let f = &self.factory.failures;
        let poisoned = batch.iter().find(|d| f.poison.contains(&d.doc.id));
        let message = if let Some(d) = poisoned {
            format!("fake failure on document {}", d.doc.id)
        } else if f.max_docs.is_some_and(|m| batch.len() > m) {
            format!("fake out of memory on {} documents", batch.len())
        } else {
            return Ok(());
        };
        if f.panic {
            panic!("{message}");
        }
        Err(Error::Device {
            device: "fake".into(),
            message,
        })
    }
}

impl Backend for FakeBackend {
    fn predict(&mut self, batch: &[PreparedDoc]) -> Result<Vec<DocPrediction>> {
        self.check(batch)?;
        Ok(batch
            .iter()
            .map(|d| fake_predict(d, &self.factory))
            .collect())
    }
}

/// A number in [0, 1) from a string.
fn unit_hash(s: &str) -> f32 {
    let h = blake3::hash(s.as_bytes());
    let b = h.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / (u32::MAX as f32 + 1.0)
}

fn capitalized(w: &str) -> bool {
    w.chars().next().is_some_and(char::is_uppercase)
}

/// Mentions are maximal runs of capitalized words (within a sentence, among the candidates);
/// mentions sharing their last word are one entity; entities whose first mentions share a
/// sentence are related.
fn fake_predict(d: &PreparedDoc, f: &FakeFactory) -> DocPrediction {
    let words: Vec<&str> = d.doc.words().map(|w| w.text.as_str()).collect();
    let starts = d.doc.sentence_starts();
    let first_of_sentence = |i: usize| starts.binary_search(&i).is_ok();
    let cap = |i: usize| i < words.len() && capitalized(words[i]);
    let mut spans: Vec<Span> = d
        .candidates()
        .into_iter()
        .filter(|s| {
            (s.start..s.end).all(cap)
                && (first_of_sentence(s.start) || !cap(s.start - 1))
                && (s.end >= starts[s.sent + 1] || !cap(s.end))
        })
        .collect();
    spans.sort();
    spans.dedup();
    let t = f.thresholds;
    let mut mentions = Vec::new();
    for s in spans {
        let score = 0.5 + 0.5 * unit_hash(&d.doc.phrase(s));
        if score >= t.mention {
            mentions.push(PredMention { span: s, score });
        }
    }
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    let mut entities: Vec<PredEntity> = Vec::new();
    for (i, m) in mentions.iter().enumerate() {
        let key = words[m.span.end - 1];
        match by_key.get(key) {
            Some(&e) => entities[e].mentions.push(i),
            None => {
                by_key.insert(key, entities.len());
                let h = unit_hash(key);
                entities.push(PredEntity {
                    mentions: vec![i],
                    entity_type: (h * f.entity_types as f32) as usize % f.entity_types.max(1),
                    type_score: 0.4 + 0.6 * h,
                    coref_score: 1.0,
                });
            }
        }
    }
    for e in &mut entities {
        if e.mentions.len() > 1 {
            e.coref_score = 0.9;
        }
    }
    let mut relations = Vec::new();
    for (h, head) in entities.iter().enumerate() {
        for (tl, tail) in entities.iter().enumerate() {
            let (hm, tm) = (head.mentions[0], tail.mentions[0]);
            if h == tl || mentions[hm].span.sent != mentions[tm].span.sent {
                continue;
            }
            let key = format!(
                "{}|{}",
                d.doc.phrase(mentions[hm].span),
                d.doc.phrase(mentions[tm].span)
            );
            let x = unit_hash(&key);
            let score = 0.3 + 0.7 * x;
            if score >= t.relation && f.relation_types > 0 {
                relations.push(PredRelation {
                    head: h,
                    tail: tl,
                    relation: (x * 7919.0) as usize % f.relation_types,
                    score,
                    evidence: (hm, tm),
                });
            }
        }
    }
    DocPrediction {
        mentions,
        entities,
        relations,
    }
}
