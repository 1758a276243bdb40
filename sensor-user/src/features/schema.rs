//! The feature schema: names, order and units of the vector fed to the
//! models. Defined once here; written into every model card by the training
//! tool and compared at model load, so a model trained on another layout is
//! refused instead of silently scoring garbage.

/// One feature of the vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureSpec {
    /// Stable `snake_case` name (the CSV header and the model card use it).
    pub name: &'static str,
    /// Unit and transform, e.g. `log1p(packets)`.
    pub unit: &'static str,
}

/// Bumped whenever a name, unit, order or computation changes.
pub const SCHEMA_VERSION: u32 = 2;

/// Number of features in a row.
pub const N_FEATURES: usize = 34;

/// Largest feature vector a scored row can carry (the schema may use fewer):
/// rows keep a fixed-size array so building one never allocates.
pub const MAX_FEATURES: usize = 40;

/// Index of `dst_packets_per_s_1s`: the alert stage's flood volume floor
/// reads the victim's packet rate back from the row.
pub const DST_PACKETS_PER_S_1S: usize = 31;

const fn f(name: &'static str, unit: &'static str) -> FeatureSpec {
    FeatureSpec { name, unit }
}

/// The schema, in vector order. Heavy-tailed quantities are `log1p`-compressed
/// here (the models see the same transform live and in training); scaling to
/// zero mean and unit variance is folded into each model's first layer.
pub const SCHEMA: [FeatureSpec; N_FEATURES] = [
    // The flow this event belongs to (one direction, lifetime so far).
    f("flow_duration", "log1p(s)"),
    f("flow_packets", "log1p(packets)"),
    f("flow_bytes", "log1p(bytes)"),
    f("flow_frame_mean", "bytes"),
    f("flow_frame_std", "bytes"),
    f("flow_iat_mean", "log1p(ms)"),
    f("flow_iat_std", "log1p(ms)"),
    f("flow_packets_per_s", "log1p(packets/s)"),
    f("flow_bytes_per_s", "log1p(bytes/s)"),
    f("flow_syn_unanswered", "0|1"),
    f("flow_rst_ratio", "rst/packets"),
    f("flow_fin_ratio", "fin/packets"),
    f("flow_dport_class", "0 none|1 <1024|2 <49152|3 dynamic"),
    f("proto_tcp", "0|1"),
    f("proto_udp", "0|1"),
    f("proto_icmp", "0|1"),
    // The flow's source host over three windows.
    f("src_new_flows_1s", "log1p(flows/s)"),
    f("src_new_flows_5m", "log1p(flows/s)"),
    f("src_new_flows_1h", "log1p(flows/s)"),
    f("src_distinct_dst_1s", "log1p(hosts)"),
    f("src_distinct_dst_5m", "log1p(hosts)"),
    f("src_distinct_dst_1h", "log1p(hosts)"),
    f("src_distinct_dport_1s", "log1p(ports)"),
    f("src_distinct_dport_5m", "log1p(ports)"),
    f("src_distinct_dport_1h", "log1p(ports)"),
    f("src_failed_ratio_5m", "failed/attempts"),
    f("src_failed_ratio_1h", "failed/attempts"),
    f("src_bytes_out_in_5m", "ln((out+1)/(in+1))"),
    f("src_mean_flow_bytes_5m", "log1p(bytes)"),
    // The flow's destination host (victim view), 1 s window.
    f("dst_distinct_src_1s", "log1p(hosts)"),
    f("dst_syn_per_s_1s", "log1p(syn/s)"),
    f("dst_packets_per_s_1s", "log1p(packets/s)"),
    // The whole gateway, from the kernel's sketches (last completed epoch).
    f("src_packets_per_s_gw", "log1p(packets/s)"),
    f("gw_distinct_src_per_s", "log1p(hosts/s)"),
];

/// Index of a feature by name (for tests and tools, not the hot path).
#[must_use]
pub fn index_of(name: &str) -> Option<usize> {
    SCHEMA.iter().position(|s| s.name == name)
}

/// The CSV header used by the dataset tool: schema names, then `label`.
#[must_use]
pub fn csv_header() -> String {
    let mut h = String::new();
    for s in &SCHEMA {
        h.push_str(s.name);
        h.push(',');
    }
    h.push_str("label");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fit_a_scored_row() {
        const { assert!(N_FEATURES <= MAX_FEATURES) };
        for (i, a) in SCHEMA.iter().enumerate() {
            for b in &SCHEMA[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn named_indexes_point_at_their_features() {
        assert_eq!(SCHEMA[DST_PACKETS_PER_S_1S].name, "dst_packets_per_s_1s");
        assert_eq!(SCHEMA[DST_PACKETS_PER_S_1S].unit, "log1p(packets/s)");
    }
}
