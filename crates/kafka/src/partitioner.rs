//! Which partition a key lands in.
//!
//! Every Carrier producer sets librdkafka's `murmur2_random` partitioner: the Java client's
//! default (murmur2 of the key, sign bit cleared, modulo the partition count). Carrier needs the
//! mapping itself, not only the broker: ingress finds the delivery worker that owns a
//! destination's lane by computing the partition of the destination ID (its task key) and
//! looking up who holds that partition. Java-compatible also means any other client keyed the
//! same way (a replay tool, a Kafka Streams job) agrees with Carrier on where a key lives.

/// The partition of `key` in a topic of `partitions` partitions (> 0), as the producers place it.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) as i32) % partitions
}

/// Kafka's murmur2 (32-bit, seed 0x9747b28c), as in the Java client's `Utils.murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (index, byte) in rest.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * index);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Java client's own test vectors (`UtilsTest.testMurmur2`).
    #[test]
    fn matches_the_java_clients_murmur2() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key) as i32, expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for partitions in [1, 3, 8, 64] {
            for key in ["", "a", "0193c4f2-7b1e-7cc1-9d1a-4f1f0c2e9a10"] {
                let partition = partition_for(key.as_bytes(), partitions);
                assert!((0..partitions).contains(&partition));
                assert_eq!(partition, partition_for(key.as_bytes(), partitions));
            }
        }
    }
}
