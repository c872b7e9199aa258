//! Randomized model check: sequences of writes, sent in groups that share batches, must give
//! the same answers as a plain map with a revision counter; a watch from the start and a
//! reopened store must both end in the model's final state.

mod common;

use std::collections::BTreeMap;

use common::*;
use muster_store::{Event, Object, Revision, Store, StoreError};

/// A small deterministic generator (xorshift64*), so that a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create(String),
    Update(String, Option<Revision>),
    Delete(String, Option<Revision>),
}

/// What the store must hold: key -> (create_revision, mod_revision, name written last).
#[derive(Default)]
struct Model {
    objects: BTreeMap<String, (Revision, Revision, String)>,
    revision: Revision,
}

impl Model {
    /// The expected answer, as (create_revision, mod_revision), applying the op on success.
    fn apply(&mut self, op: &Op, name: &str) -> Result<(Revision, Revision), StoreError> {
        let check = |key: &str, current: Revision, expected: Option<Revision>| match expected {
            Some(expected) if expected != current => Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current,
            }),
            _ => Ok(()),
        };
        match op {
            Op::Create(key) => {
                if self.objects.contains_key(key) {
                    return Err(StoreError::AlreadyExists(key.clone()));
                }
                self.revision += 1;
                let revision = self.revision;
                self.objects
                    .insert(key.clone(), (revision, revision, name.to_string()));
                Ok((revision, revision))
            }
            Op::Update(key, expected) => {
                let Some(&(created, modified, _)) = self.objects.get(key) else {
                    return Err(StoreError::NotFound(key.clone()));
                };
                check(key, modified, *expected)?;
                self.revision += 1;
                let revision = self.revision;
                self.objects
                    .insert(key.clone(), (created, revision, name.to_string()));
                Ok((created, revision))
            }
            Op::Delete(key, expected) => {
                let Some(&(created, modified, _)) = self.objects.get(key) else {
                    return Err(StoreError::NotFound(key.clone()));
                };
                check(key, modified, *expected)?;
                self.revision += 1;
                self.objects.remove(key);
                Ok((created, self.revision))
            }
        }
    }

    /// A random op on one of a few keys, with a precondition that is sometimes right,
    /// sometimes stale, sometimes absent.
    fn random_op(&self, rng: &mut Rng) -> Op {
        let key = format!("/m/{}", rng.below(6));
        let current = self.objects.get(&key).map(|&(_, modified, _)| modified);
        let expected = match rng.below(3) {
            0 => None,
            1 => current.or(Some(1)),
            _ => Some(rng.below(self.revision + 2)),
        };
        match rng.below(5) {
            0 | 1 => Op::Create(key),
            2 | 3 => Op::Update(key, expected),
            _ => Op::Delete(key, expected),
        }
    }
}

fn state_of(items: &[Object]) -> BTreeMap<String, (Revision, Revision, String)> {
    items
        .iter()
        .map(|o| {
            let name = o.json().unwrap()["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string();
            (o.key.to_string(), (o.create_revision, o.mod_revision, name))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_write_sequences_match_the_model() {
    for seed in 1..=6u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), options());
        let mut model = Model {
            revision: store.revision(),
            ..Model::default()
        };
        let (_, mut watch) = store.list_and_watch("/m/").await.unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut written = 0;
        while written < 150 {
            // A group of ops sent together; the model applies them in the same order.
            let group: Vec<(Op, String)> = (0..1 + rng.below(8))
                .map(|i| {
                    let op = model.random_op(&mut rng);
                    (op, format!("s{seed}-w{written}-{i}"))
                })
                .collect();
            let answers = futures::future::join_all(group.iter().map(|(op, name)| {
                let store = store.clone();
                async move {
                    match op {
                        Op::Create(key) => store.create(key, pod(name)).await,
                        Op::Update(key, expected) => store.update(key, pod(name), *expected).await,
                        Op::Delete(key, expected) => store.delete(key, *expected).await,
                    }
                }
            }))
            .await;
            for ((op, name), answer) in group.iter().zip(answers) {
                let got = answer.map(|o| (o.create_revision, o.mod_revision));
                let expected = model.apply(op, name);
                assert_eq!(got, expected, "seed {seed}: {op:?}");
                written += 1;
            }
        }
        assert_eq!(store.revision(), model.revision, "seed {seed}");
        let list = store.list("/m/", None, None).await.unwrap();
        assert_eq!(state_of(&list.items), model.objects, "seed {seed}: list");

        // The watch, applied to the (empty) starting list, reaches the same state.
        let mut watched: BTreeMap<String, Object> = BTreeMap::new();
        let mut at = 0;
        while at < model.revision {
            let event = next_event(&mut watch).await.unwrap().unwrap();
            at = event.revision();
            match event {
                Event::Put { object, .. } => {
                    watched.insert(object.key.to_string(), object);
                }
                Event::Delete { object, .. } => {
                    watched.remove(&*object.key);
                }
                Event::Progress(_) => {}
            }
        }
        let watched: Vec<Object> = watched.into_values().collect();
        assert_eq!(state_of(&watched), model.objects, "seed {seed}: watch");

        drop(watch);
        drop(store);
        let reopened = open(dir.path(), options());
        assert_eq!(reopened.revision(), model.revision, "seed {seed}: reopen");
        let relisted = reopened.list("/m/", None, None).await.unwrap();
        assert_eq!(relisted.items, list.items, "seed {seed}: reopen");
    }
}
