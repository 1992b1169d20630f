//! Resource budgets: how many flows, how many outputs per flow, and how much ring memory a
//! node takes on. The one check every change goes through (`Node::admit`: the local API's
//! POST flows / POST outputs, every manager command that creates or changes flows,
//! `update_config`) and the config at start (`daemon::load`, `quoll check-config`).
//!
//! Why budgets at all: every flow allocates its ring when it starts (`ring_chunks` slots of
//! [`SLOT_BYTES`]) and holds sockets, tasks and buffers; nothing else bounded them, so an API
//! caller could talk a 1 GB board into swapping (five flows of 65 536 chunks took 430 MB)
//! or create flows until the process had 14 GB. The defaults are per board profile
//! (`board/*.json`, `limits`); the `limits` block overrides them field by field. How the
//! board numbers were derived is in docs/security.md.
//!
//! The memory budget (`max_ring_bytes`) counts each flow's ring and, for every `hls` output,
//! the segments it keeps in memory ([`hls_bytes`]): those are the two allocations that grow
//! with the config rather than with the process.
//!
//! Every configured flow counts, running or not: starting a stopped flow is a lifecycle
//! action that must never be refused, so the memory it will take is reserved when it is
//! configured.

use std::fmt;

use serde::Deserialize;

use super::model::{Config, FlowConfig, HlsOutputConfig, LimitsConfig, OutputKind};
use crate::ts::ring::SLOT_BYTES;

/// The limits in force: a board's defaults with the config's overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub max_flows: usize,
    pub max_outputs_per_flow: usize,
    pub max_ring_bytes: u64,
}

impl Budget {
    /// Without a board profile (a development machine, an x86 box): the Jetson's numbers,
    /// the largest board Quoll targets.
    pub const GENERIC: Budget = Budget {
        max_flows: 64,
        max_outputs_per_flow: 16,
        max_ring_bytes: 256 << 20,
    };

    /// The board's defaults with every field `limits` sets replaced.
    pub fn with_overrides(self, limits: &LimitsConfig) -> Budget {
        Budget {
            max_flows: limits.max_flows.unwrap_or(self.max_flows),
            max_outputs_per_flow: limits
                .max_outputs_per_flow
                .unwrap_or(self.max_outputs_per_flow),
            max_ring_bytes: limits.max_ring_bytes.unwrap_or(self.max_ring_bytes),
        }
    }

    /// Whether `flows` fit. The first limit exceeded is reported, in the order flows,
    /// outputs (flow by flow), ring memory.
    pub fn check(&self, flows: &[FlowConfig]) -> Result<Usage, LimitError> {
        if flows.len() > self.max_flows {
            return Err(LimitError::Flows {
                count: flows.len(),
                max: self.max_flows,
            });
        }
        for (i, f) in flows.iter().enumerate() {
            if f.outputs.len() > self.max_outputs_per_flow {
                return Err(LimitError::Outputs {
                    flow: i,
                    count: f.outputs.len(),
                    max: self.max_outputs_per_flow,
                });
            }
        }
        let memory = |f: &FlowConfig| ring_bytes(f).saturating_add(flow_hls_bytes(f));
        let mut total: u64 = 0;
        for (i, f) in flows.iter().enumerate() {
            total = total.saturating_add(memory(f));
            if total > self.max_ring_bytes {
                // Named on the flow that tips it over: on a create that is the new flow.
                return Err(LimitError::RingBytes {
                    flow: i,
                    flow_bytes: ring_bytes(f),
                    hls_bytes: flow_hls_bytes(f),
                    total: flows.iter().map(memory).fold(0, u64::saturating_add),
                    max: self.max_ring_bytes,
                });
            }
        }
        Ok(Usage {
            flows: flows.len(),
            ring_bytes: flows.iter().map(ring_bytes).fold(0, u64::saturating_add),
            hls_bytes: flows
                .iter()
                .map(flow_hls_bytes)
                .fold(0, u64::saturating_add),
        })
    }
}

/// What a set of flows takes from the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub flows: usize,
    pub ring_bytes: u64,
    /// The HLS outputs' segments ([`hls_bytes`]); with `ring_bytes`, what
    /// `max_ring_bytes` bounds.
    pub hls_bytes: u64,
}

/// The memory one flow's ring takes once it runs.
pub fn ring_bytes(flow: &FlowConfig) -> u64 {
    let chunks = flow.ring_chunks.unwrap_or(FlowConfig::DEFAULT_RING_CHUNKS);
    (chunks as u64).saturating_mul(SLOT_BYTES as u64)
}

/// The bitrate an `hls` output's memory is reserved for: 20 Mbit/s, the flow rate the
/// benchmarks and the board budgets are sized on. A stream above it still runs (its segments
/// are bounded by `hls::segmenter::MAX_SEGMENT_BYTES`); the budget then under-counts it in
/// proportion.
pub const HLS_BUDGET_BITS_PER_SECOND: u64 = 20_000_000;

/// The memory an `hls` output keeps once it runs: `playlist_size` finished segments (the
/// window the API serves; the upload queue holds at most as many, the newest, sharing the
/// same buffers), one more whose PUT is in flight after sliding out of both, and the one the
/// segmenter is filling; each `segment_duration_ms` at [`HLS_BUDGET_BITS_PER_SECOND`].
pub fn hls_bytes(hls: &HlsOutputConfig) -> u64 {
    let segment = hls
        .segment_duration_ms
        .saturating_mul(HLS_BUDGET_BITS_PER_SECOND / 8)
        / 1000;
    segment.saturating_mul(u64::from(hls.playlist_size) + 2)
}

/// Every `hls` output of `flow` ([`hls_bytes`]).
pub fn flow_hls_bytes(flow: &FlowConfig) -> u64 {
    flow.outputs
        .iter()
        .map(|o| match &o.kind {
            OutputKind::Hls(h) => hls_bytes(h),
            _ => 0,
        })
        .fold(0, u64::saturating_add)
}

/// The check of a whole config against `board`'s budget (its `limits` applied).
pub fn check(cfg: &Config, board: Budget) -> Result<Usage, LimitError> {
    board.with_overrides(&cfg.limits).check(&cfg.flows)
}

/// A budget exceeded. The change that would exceed it is refused whole; the error code is
/// `limit_exceeded` in the API and in the manager's `command_ack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    Flows {
        count: usize,
        max: usize,
    },
    Outputs {
        /// Index of the flow in `flows`.
        flow: usize,
        count: usize,
        max: usize,
    },
    RingBytes {
        /// Index of the flow whose ring (and HLS segments) take the total over.
        flow: usize,
        /// That flow's ring.
        flow_bytes: u64,
        /// That flow's HLS outputs' segments ([`hls_bytes`]).
        hls_bytes: u64,
        /// Every flow's ring and HLS segments added up.
        total: u64,
        max: u64,
    },
}

impl LimitError {
    pub const CODE: &'static str = "limit_exceeded";

    /// The JSON path of what is over (in the candidate config).
    pub fn path(&self) -> String {
        match self {
            LimitError::Flows { .. } => "flows".into(),
            LimitError::Outputs { flow, .. } => format!("flows[{flow}].outputs"),
            LimitError::RingBytes {
                flow, hls_bytes, ..
            } if *hls_bytes > 0 => {
                format!("flows[{flow}].outputs")
            }
            LimitError::RingBytes { flow, .. } => format!("flows[{flow}].ring_chunks"),
        }
    }

    /// The `limits` field that sets the limit, for the operator who wants to raise it.
    pub fn limit_key(&self) -> &'static str {
        match self {
            LimitError::Flows { .. } => "limits.max_flows",
            LimitError::Outputs { .. } => "limits.max_outputs_per_flow",
            LimitError::RingBytes { .. } => "limits.max_ring_bytes",
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.limit_key();
        let path = self.path();
        match *self {
            LimitError::Flows { count, max } => write!(
                f,
                "{path}: {count} flows would be configured, at most {max} ({key})"
            ),
            LimitError::Outputs { count, max, .. } => write!(
                f,
                "{path}: {count} outputs in one flow, at most {max} ({key})"
            ),
            LimitError::RingBytes {
                flow_bytes,
                hls_bytes: 0,
                total,
                max,
                ..
            } => write!(
                f,
                "{path}: the flows' rings would take {total} bytes ({}), at most {max} ({}) \
                 ({key}); this flow's ring is {flow_bytes} bytes ({SLOT_BYTES} per chunk)",
                mib(total),
                mib(max)
            ),
            LimitError::RingBytes {
                flow_bytes,
                hls_bytes,
                total,
                max,
                ..
            } => write!(
                f,
                "{path}: the flows' rings and HLS segments would take {total} bytes ({}), \
                 at most {max} ({}) ({key}); this flow's ring is {flow_bytes} bytes and its \
                 HLS outputs' segments {hls_bytes} bytes ((playlist_size + 2) × \
                 segment_duration_ms at {} Mbit/s)",
                mib(total),
                mib(max),
                HLS_BUDGET_BITS_PER_SECOND / 1_000_000
            ),
        }
    }
}

impl std::error::Error for LimitError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InputConfig, UdpInputConfig};

    fn flow(id: &str, ring_chunks: Option<usize>, outputs: usize) -> FlowConfig {
        let out = crate::config::parse_unvalidated(
            r#"{"flows":[{"id":"x","input":{"type":"udp","bind_addr":"127.0.0.1:1"},
                "outputs":[{"type":"udp","id":"o","dest_addr":"127.0.0.1:2"}]}]}"#,
        )
        .unwrap()
        .flows[0]
            .outputs[0]
            .clone();
        FlowConfig {
            id: id.into(),
            name: id.into(),
            enabled: true,
            input: InputConfig::Udp(UdpInputConfig {
                bind_addr: "127.0.0.1:1".parse().unwrap(),
                interface_addr: None,
                allowed_sources: None,
                extra: Default::default(),
            }),
            outputs: vec![out; outputs],
            ring_chunks,
            extra: Default::default(),
        }
    }

    const SMALL: Budget = Budget {
        max_flows: 3,
        max_outputs_per_flow: 2,
        max_ring_bytes: 4 << 20,
    };

    #[test]
    fn within_budget_reports_usage() {
        let flows = [flow("a", None, 2), flow("b", Some(16), 0)];
        let u = SMALL.check(&flows).unwrap();
        assert_eq!(u.flows, 2);
        assert_eq!(u.ring_bytes, (1024 + 16) * SLOT_BYTES as u64);
        assert_eq!(u.hls_bytes, 0);
        assert_eq!(SMALL.check(&[]).unwrap().ring_bytes, 0);
    }

    fn with_hls(mut f: FlowConfig, outputs: &str) -> FlowConfig {
        let json = format!(
            r#"{{"flows":[{{"id":"x","input":{{"type":"udp","bind_addr":"127.0.0.1:1"}},
                "outputs":{outputs}}}]}}"#
        );
        f.outputs = crate::config::parse_unvalidated(&json).unwrap().flows[0]
            .outputs
            .clone();
        f
    }

    /// An HLS output's segments count against the memory budget: the window it serves
    /// (`playlist_size`), the one in flight and the one being filled, at 20 Mbit/s.
    #[test]
    fn hls_segments_count_against_the_memory_budget() {
        let defaults = with_hls(
            flow("a", Some(16), 0),
            r#"[{"type":"hls","id":"h","ingest_url":"http://127.0.0.1:1/live/"},
                {"type":"udp","id":"u","dest_addr":"127.0.0.1:2"}]"#,
        );
        // 2 s at 2.5 MB/s = 5 MB a segment, 6 + 2 of them.
        let one = 8 * 5_000_000;
        assert_eq!(flow_hls_bytes(&defaults), one);
        let tuned = with_hls(
            flow("b", Some(16), 0),
            r#"[{"type":"hls","id":"h","ingest_url":"http://127.0.0.1:1/live/",
                 "segment_duration_ms":1000,"playlist_size":3},
                {"type":"hls","id":"i","ingest_url":"http://127.0.0.1:1/b/"}]"#,
        );
        assert_eq!(flow_hls_bytes(&tuned), 5 * 2_500_000 + one);
        let rings = 32 * SLOT_BYTES as u64;
        let big = Budget {
            max_ring_bytes: 1 << 30,
            ..SMALL
        };
        let u = big.check(&[defaults.clone(), tuned.clone()]).unwrap();
        assert_eq!((u.ring_bytes, u.hls_bytes), (rings, 2 * one + 12_500_000));

        // 64 MiB (a Pi 4) holds one default HLS output, not two.
        let pi4 = Budget {
            max_ring_bytes: 64 << 20,
            ..big
        };
        assert!(pi4.check(std::slice::from_ref(&defaults)).is_ok());
        let e = pi4.check(&[defaults.clone(), defaults]).unwrap_err();
        assert_eq!(
            e,
            LimitError::RingBytes {
                flow: 1,
                flow_bytes: 16 * SLOT_BYTES as u64,
                hls_bytes: one,
                total: 2 * (one + 16 * SLOT_BYTES as u64),
                max: 64 << 20,
            }
        );
        assert_eq!(e.path(), "flows[1].outputs");
        assert!(
            e.to_string().contains("rings and HLS segments")
                && e.to_string()
                    .contains("its HLS outputs' segments 40000000 bytes"),
            "{e}"
        );
        // Without HLS the message and path stay the ring's.
        let e = SMALL.check(&[flow("c", Some(65_536), 0)]).unwrap_err();
        assert_eq!(e.path(), "flows[0].ring_chunks");
        assert!(!e.to_string().contains("HLS"), "{e}");
    }

    #[test]
    fn one_flow_too_many_is_refused() {
        let flows: Vec<_> = (0..4)
            .map(|i| flow(&format!("f{i}"), Some(16), 0))
            .collect();
        assert!(SMALL.check(&flows[..3]).is_ok());
        let e = SMALL.check(&flows).unwrap_err();
        assert_eq!(e, LimitError::Flows { count: 4, max: 3 });
        assert_eq!(e.path(), "flows");
        assert_eq!(
            e.to_string(),
            "flows: 4 flows would be configured, at most 3 (limits.max_flows)"
        );
    }

    #[test]
    fn outputs_are_counted_per_flow() {
        let e = SMALL
            .check(&[flow("a", Some(16), 2), flow("b", Some(16), 3)])
            .unwrap_err();
        assert_eq!(
            e,
            LimitError::Outputs {
                flow: 1,
                count: 3,
                max: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "flows[1].outputs: 3 outputs in one flow, at most 2 (limits.max_outputs_per_flow)"
        );
    }

    /// The measured attack: a flow of 65 536 chunks is 87 MB on its own.
    #[test]
    fn the_largest_ring_does_not_fit_a_small_board() {
        let e = SMALL.check(&[flow("a", Some(65_536), 0)]).unwrap_err();
        let bytes = 65_536 * SLOT_BYTES as u64;
        assert_eq!(
            e,
            LimitError::RingBytes {
                flow: 0,
                flow_bytes: bytes,
                hls_bytes: 0,
                total: bytes,
                max: 4 << 20
            }
        );
        assert_eq!(e.path(), "flows[0].ring_chunks");
        assert!(e.to_string().contains("(limits.max_ring_bytes)"), "{e}");
    }

    #[test]
    fn ring_memory_is_summed_and_named_on_the_flow_that_tips_it() {
        // Three default rings (1.3 MiB each) fit 4 MiB; the flow after them does not.
        let flows = [
            flow("a", None, 0),
            flow("b", None, 0),
            flow("c", Some(2048), 0),
        ];
        let e = SMALL.check(&flows).unwrap_err();
        assert!(matches!(e, LimitError::RingBytes { flow: 2, .. }), "{e:?}");
        let exact = Budget {
            max_ring_bytes: 4096 * SLOT_BYTES as u64,
            ..SMALL
        };
        assert!(exact.check(&flows).is_ok(), "exactly the limit fits");
    }

    #[test]
    fn the_flows_limit_is_checked_before_outputs_and_memory() {
        let flows: Vec<_> = (0..4)
            .map(|i| flow(&format!("f{i}"), Some(65_536), 9))
            .collect();
        assert!(matches!(SMALL.check(&flows), Err(LimitError::Flows { .. })));
    }

    #[test]
    fn config_overrides_replace_board_defaults_field_by_field() {
        let limits = LimitsConfig {
            max_flows: Some(1),
            ..LimitsConfig::default()
        };
        let b = Budget::GENERIC.with_overrides(&limits);
        assert_eq!(b.max_flows, 1);
        assert_eq!(b.max_outputs_per_flow, Budget::GENERIC.max_outputs_per_flow);
        assert_eq!(b.max_ring_bytes, Budget::GENERIC.max_ring_bytes);
        let mut cfg = crate::config::parse_unvalidated("{}").unwrap();
        cfg.flows = vec![flow("a", None, 0), flow("b", None, 0)];
        assert!(check(&cfg, Budget::GENERIC).is_ok());
        cfg.limits = limits;
        assert!(matches!(
            check(&cfg, Budget::GENERIC),
            Err(LimitError::Flows { count: 2, max: 1 })
        ));
    }

    #[test]
    fn the_generic_budget_refuses_the_measured_attacks() {
        // Five flows of 65 536 chunks: 430 MB measured before budgets existed. Three
        // (249 MiB) fit the generic 256 MiB; the fourth is refused.
        let big: Vec<_> = (0..5)
            .map(|i| flow(&format!("f{i}"), Some(65_536), 1))
            .collect();
        assert!(matches!(
            Budget::GENERIC.check(&big),
            Err(LimitError::RingBytes { flow: 3, .. })
        ));
        // On a Pi 4 not even one does.
        let pi4 = crate::board::budget(Some("raspberrypi4-64"));
        assert!(matches!(
            pi4.check(&big[..1]),
            Err(LimitError::RingBytes { flow: 0, .. })
        ));
        // 5 519 default flows: 14.5 GB measured.
        let many: Vec<_> = (0..65).map(|i| flow(&format!("f{i}"), None, 1)).collect();
        assert!(matches!(
            Budget::GENERIC.check(&many),
            Err(LimitError::Flows { count: 65, max: 64 })
        ));
        assert!(Budget::GENERIC.check(&many[..64]).is_ok());
    }
}
