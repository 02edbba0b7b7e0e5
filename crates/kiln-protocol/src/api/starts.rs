//! How fast sessions start, read off their logs: the phases of one session's start
//! (`StartPhases`, shown in its detail) and percentiles over many (`GET /api/stats/starts`).

use super::event::EventEnvelope;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a session's start went, from its log (millisecond resolution). A phase is absent when
/// it has not happened (yet) or did not apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StartPhases {
    /// Where the sandbox came from: `pool`, `image`, `snapshot` or `clone`.
    pub source: Option<String>,
    /// Session created → its sandbox usable (claimed, restored or created).
    pub sandbox_ms: Option<u64>,
    /// Sandbox usable → checkout synced with the branch head (image and pool starts).
    pub sync_ms: Option<u64>,
    /// First prompt accepted → the first request to the model.
    pub first_model_request_ms: Option<u64>,
    /// First model request → the first text from the model (the model's time to first token).
    pub model_ttft_ms: Option<u64>,
}

impl StartPhases {
    /// Reads the phases off a session's events, oldest first.
    pub fn from_events(events: &[EventEnvelope]) -> StartPhases {
        use super::event::{Event, SandboxState};
        let at =
            |pred: &dyn Fn(&Event) -> bool| events.iter().find(|e| pred(&e.event)).map(|e| e.at_ms);
        let since = |from: Option<i64>, to: Option<i64>| match (from, to) {
            (Some(from), Some(to)) if to >= from => Some((to - from) as u64),
            _ => None,
        };
        let usable_index = events.iter().position(|e| {
            matches!(
                e.event,
                Event::SandboxStatus {
                    state: SandboxState::Syncing | SandboxState::Ready,
                    ..
                }
            )
        });
        let usable_event = usable_index.map(|i| &events[i]);
        let source = usable_event.and_then(|e| match &e.event {
            Event::SandboxStatus { state, detail, .. } => {
                let detail = detail.as_deref().unwrap_or("");
                Some(
                    if detail.contains("warm pool") {
                        "pool"
                    } else if detail.contains("snapshot") {
                        "snapshot"
                    } else if *state == SandboxState::Syncing {
                        "image"
                    } else {
                        "clone"
                    }
                    .to_string(),
                )
            }
            _ => None,
        });
        let syncing = at(&|e| {
            matches!(
                e,
                Event::SandboxStatus {
                    state: SandboxState::Syncing,
                    ..
                }
            )
        });
        let synced = syncing.and_then(|from| {
            events
                .iter()
                .find(|e| {
                    e.at_ms >= from
                        && matches!(
                            e.event,
                            Event::SandboxStatus {
                                state: SandboxState::Ready,
                                ..
                            }
                        )
                })
                .map(|e| e.at_ms)
        });
        // The first prompt's first request and its first text, counted only while nothing
        // interrupted them: after a crash and restart, the downtime is not the start's.
        let index = |pred: &dyn Fn(&Event) -> bool| events.iter().position(|e| pred(&e.event));
        let interrupted_between = |from: usize, to: usize| {
            events[from..to]
                .iter()
                .any(|e| matches!(e.event, Event::PromptInterrupted { .. }))
        };
        let uninterrupted = |from: Option<usize>, to: Option<usize>| match (from, to) {
            (Some(from), Some(to)) if from <= to && !interrupted_between(from, to) => {
                since(Some(events[from].at_ms), Some(events[to].at_ms))
            }
            _ => None,
        };
        let queued = index(&|e| matches!(e, Event::PromptQueued { .. }));
        let prompt = queued.and_then(|i| events[i].event.prompt_id().cloned());
        let of_prompt = |e: &Event| prompt.is_some() && e.prompt_id() == prompt.as_ref();
        let request = index(&|e| matches!(e, Event::ModelRequest { .. }) && of_prompt(e));
        let token = request.and_then(|request| {
            events[request..]
                .iter()
                .position(|e| matches!(e.event, Event::TextDelta { .. }) && of_prompt(&e.event))
                .map(|i| request + i)
        });
        let created_index = index(&|e| matches!(e, Event::SessionCreated { .. }));
        StartPhases {
            source,
            sandbox_ms: uninterrupted(created_index, usable_index),
            sync_ms: since(syncing, synced),
            first_model_request_ms: uninterrupted(queued, request),
            model_ttft_ms: uninterrupted(request, token),
        }
    }
}

/// Start phases over many sessions (`GET /api/stats/starts`: the caller's sessions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StartStats {
    pub sessions: usize,
    pub sandbox_ms: Percentiles,
    pub sync_ms: Percentiles,
    pub first_model_request_ms: Percentiles,
    pub model_ttft_ms: Percentiles,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Percentiles {
    /// Samples (sessions where the phase happened).
    pub n: usize,
    pub p50: Option<u64>,
    pub p95: Option<u64>,
}

impl Percentiles {
    pub fn of(mut samples: Vec<u64>) -> Percentiles {
        samples.sort_unstable();
        let at = |q: f64| {
            (!samples.is_empty()).then(|| {
                let index =
                    ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
                samples[index]
            })
        };
        Percentiles {
            n: samples.len(),
            p50: at(0.5),
            p95: at(0.95),
        }
    }
}

impl StartStats {
    pub fn of(phases: &[StartPhases]) -> StartStats {
        let pick = |f: fn(&StartPhases) -> Option<u64>| {
            Percentiles::of(phases.iter().filter_map(f).collect())
        };
        StartStats {
            sessions: phases.len(),
            sandbox_ms: pick(|p| p.sandbox_ms),
            sync_ms: pick(|p| p.sync_ms),
            first_model_request_ms: pick(|p| p.first_model_request_ms),
            model_ttft_ms: pick(|p| p.model_ttft_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::event::{Event, SandboxState, UserRef};
    use kiln_core::{PromptId, UserId};

    fn at(at_ms: i64, event: Event) -> EventEnvelope {
        EventEnvelope {
            seq: at_ms as u64,
            at_ms,
            event,
        }
    }

    #[test]
    fn start_phases_come_from_the_log() {
        let user = UserRef {
            id: UserId::random(),
            name: "ada".into(),
        };
        let prompt_id = PromptId::random();
        let status = |state, detail: &str| Event::SandboxStatus {
            state,
            sandbox_id: None,
            detail: Some(detail.into()),
        };
        let events = [
            at(
                100,
                Event::SessionCreated {
                    repo: "r".into(),
                    title: "t".into(),
                    by: user.clone(),
                },
            ),
            at(
                101,
                Event::PromptQueued {
                    prompt_id: prompt_id.clone(),
                    author: user,
                    text: "x".into(),
                    delivery: Default::default(),
                    plan: false,
                },
            ),
            at(
                104,
                status(
                    SandboxState::Syncing,
                    "claimed from the warm pool (image i)",
                ),
            ),
            at(
                110,
                Event::ModelRequest {
                    prompt_id: prompt_id.clone(),
                    turn: 1,
                    model: "m".into(),
                },
            ),
            at(150, status(SandboxState::Ready, "")),
            at(
                310,
                Event::TextDelta {
                    prompt_id,
                    text: "hi".into(),
                },
            ),
        ];
        let phases = StartPhases::from_events(&events);
        assert_eq!(phases.source.as_deref(), Some("pool"));
        assert_eq!(phases.sandbox_ms, Some(4));
        assert_eq!(phases.sync_ms, Some(46));
        assert_eq!(phases.first_model_request_ms, Some(9));
        assert_eq!(phases.model_ttft_ms, Some(200));
        assert_eq!(StartPhases::from_events(&[]), StartPhases::default());
    }

    #[test]
    fn a_restart_mid_start_is_not_counted_as_the_model_s_time() {
        let user = UserRef {
            id: UserId::random(),
            name: "ann".into(),
        };
        let (first, second) = (PromptId::random(), PromptId::random());
        let queued = |id: &PromptId| Event::PromptQueued {
            prompt_id: id.clone(),
            author: user.clone(),
            text: "x".into(),
            delivery: Default::default(),
            plan: false,
        };
        let request = |id: &PromptId| Event::ModelRequest {
            prompt_id: id.clone(),
            turn: 1,
            model: "m".into(),
        };
        // kill -9 while waiting for the first token; 49 s later the next prompt's text comes.
        let events = vec![
            at(100, queued(&first)),
            at(110, request(&first)),
            at(
                50_000,
                Event::PromptInterrupted {
                    prompt_id: first.clone(),
                },
            ),
            at(50_010, queued(&second)),
            at(50_020, request(&second)),
            at(
                50_300,
                Event::TextDelta {
                    prompt_id: second,
                    text: "hi".into(),
                },
            ),
        ];
        let phases = StartPhases::from_events(&events);
        assert_eq!(phases.first_model_request_ms, Some(10));
        assert_eq!(phases.model_ttft_ms, None, "{phases:?}");

        // Queued before the crash, asked after it: not the start's time either.
        let events = vec![
            at(100, queued(&first)),
            at(
                40_000,
                Event::PromptInterrupted {
                    prompt_id: PromptId::random(),
                },
            ),
            at(40_100, request(&first)),
        ];
        assert_eq!(
            StartPhases::from_events(&events).first_model_request_ms,
            None
        );
    }

    #[test]
    fn percentiles() {
        let p = Percentiles::of((1..=100).collect());
        assert_eq!((p.n, p.p50, p.p95), (100, Some(50), Some(95)));
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
        let stats = StartStats::of(&[StartPhases {
            sandbox_ms: Some(3),
            ..Default::default()
        }]);
        assert_eq!(stats.sandbox_ms.p50, Some(3));
        assert_eq!(stats.sync_ms.n, 0);
    }
}
