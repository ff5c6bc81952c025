//! Which partitions a member should own, given the live members: every member computes the
//! same answer from the same list, so nobody has to hand assignments out. The leases make a
//! disagreement (two members with different lists, for a moment) safe: a partition is taken
//! only once its previous owner let it go or its lease ran out.
//!
//! Shares are *sticky* and *balanced* (design.md, "Shares"): each partition ranks the live
//! instances by a fixed hash of (instance, partition) — rendezvous hashing — and the
//! partitions go to the instances they rank highest, with every instance holding ⌊P/n⌋ or
//! ⌈P/n⌉ of them. A member joining or leaving moves about the share it gains or loses, not
//! almost every partition as `p % n` over the sorted list did. Shares are computed from
//! *instances* (a member's configured `kafka.instance_id`, else its unique member ID), so a
//! pod restarted under the same name gets the same share back; two live processes of one
//! instance both want that share, and the leases give each partition to one of them.

use std::collections::BTreeSet;

use carrier_store::leases::Member;

/// The partitions of `0..partitions` that `me` should own among the live `members`. Empty
/// when `me` is not listed (its own heartbeat has not been seen yet).
///
/// While any live member has no instance (a Carrier version before sticky shares, during a
/// rolling upgrade), every member falls back to that version's rule, partition `p` to the
/// member at `p % members.len()` of the list sorted by member ID, so old and new members agree.
pub fn owned_by(me: &Member, members: &[Member], partitions: i32) -> Vec<i32> {
    if !members.iter().any(|member| member.id == me.id) {
        return Vec::new();
    }
    if members.iter().any(|member| member.instance.is_none()) {
        return owned_by_modulo(&me.id, members, partitions);
    }
    let instances: BTreeSet<&str> = members
        .iter()
        .filter_map(|member| member.instance.as_deref())
        .collect();
    let instances: Vec<&str> = instances.into_iter().collect();
    let Some(mine) = me
        .instance
        .as_deref()
        .and_then(|instance| instances.iter().position(|known| *known == instance))
    else {
        return Vec::new();
    };
    shares(&instances, partitions)
        .into_iter()
        .zip(0..)
        .filter(|(owner, _)| *owner == mine)
        .map(|(_, partition)| partition)
        .collect()
}

/// The rule before sticky shares: `p % members.len()` over the members sorted by ID.
fn owned_by_modulo(me: &str, members: &[Member], partitions: i32) -> Vec<i32> {
    let mut ids: Vec<&str> = members.iter().map(|member| member.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let Some(index) = ids.iter().position(|id| *id == me) else {
        return Vec::new();
    };
    (0..partitions)
        .filter(|p| *p as usize % ids.len() == index)
        .collect()
}

/// The owner of every partition of `0..partitions`, as an index into `instances` (sorted,
/// distinct): the stable assignment under rendezvous weights with quotas.
///
/// Each of the `n` instances gets ⌊P/n⌋ partitions, and `P % n` of them one more. The pairs
/// (instance, partition) are taken in order of falling [`weight`] (ties by instance, then
/// partition); a pair is assigned when its partition is still free and its instance has room.
/// The result is the one assignment in which no partition and instance both rank each other
/// above what they got, so it depends only on the set of instances, never on who computes it.
pub fn shares(instances: &[&str], partitions: i32) -> Vec<usize> {
    let count = instances.len();
    let partition_count = usize::try_from(partitions).unwrap_or(0);
    if count == 0 || partition_count == 0 {
        return Vec::new();
    }
    let base = partition_count / count;
    let larger = partition_count % count;
    let mut pairs: Vec<(u64, usize, usize)> = Vec::with_capacity(count * partition_count);
    for (index, instance) in instances.iter().enumerate() {
        for partition in 0..partition_count {
            pairs.push((weight(instance, partition as i32), index, partition));
        }
    }
    pairs.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut owner: Vec<Option<usize>> = vec![None; partition_count];
    let mut load = vec![0usize; count];
    let mut at_larger = 0;
    let mut assigned = 0;
    for (_, index, partition) in pairs {
        if owner[partition].is_some() {
            continue;
        }
        let room = if at_larger < larger { base + 1 } else { base };
        if load[index] >= room {
            continue;
        }
        owner[partition] = Some(index);
        load[index] += 1;
        if load[index] == base + 1 {
            at_larger += 1;
        }
        assigned += 1;
        if assigned == partition_count {
            break;
        }
    }
    // Every partition found room: the quotas add up to the partition count, and an instance
    // that is full stays full.
    owner
        .into_iter()
        .map(|owner| owner.expect("the quotas add up to the partition count"))
        .collect()
}

/// How much `partition` wants `instance`: FNV-1a (64 bits) over the instance's bytes, a
/// separator and the partition (4 bytes, little-endian), then the murmur3 finaliser so that
/// names differing in one character rank independently. Fixed forever: every member of every
/// version must compute the same weights, or their shares disagree (like the partitioner).
pub fn weight(instance: &str, partition: i32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in instance.bytes().chain([0xff]).chain(partition.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(id: &str, instance: Option<&str>) -> Member {
        Member {
            id: id.to_string(),
            instance: instance.map(str::to_string),
        }
    }

    /// Members whose instance is their ID (no `instance_id` configured).
    fn members(names: &[&str]) -> Vec<Member> {
        names.iter().map(|name| member(name, Some(name))).collect()
    }

    fn owners(instances: &[String], partitions: i32) -> Vec<String> {
        let mut sorted: Vec<&str> = instances.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        shares(&sorted, partitions)
            .into_iter()
            .map(|index| sorted[index].to_string())
            .collect()
    }

    fn moved(before: &[String], after: &[String]) -> usize {
        before.iter().zip(after).filter(|(a, b)| a != b).count()
    }

    fn loads(owners: &[String], instances: &[String]) -> Vec<usize> {
        instances
            .iter()
            .map(|instance| owners.iter().filter(|owner| *owner == instance).count())
            .collect()
    }

    /// Partitions a member with `share` partitions gains or loses at least: the share itself.
    fn share_of(owners: &[String], instance: &str) -> usize {
        owners.iter().filter(|owner| *owner == instance).count()
    }

    /// The bound stated in design.md: a join or leave moves at most twice the share gained or
    /// lost, plus one per member.
    fn bound(share: usize, members: usize) -> usize {
        2 * share + members
    }

    /// Distinct pod-like names (a Deployment's `<name>-<hash>-<suffix>`).
    fn pod_names() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("carrier-delivery-[a-z0-9]{5}", 1..9)
            .prop_map(|names| names.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn one_owner_per_partition_and_shares_within_one(names in pod_names(), partitions in 0i32..130) {
            let all: Vec<Member> = names.iter().map(|name| member(&format!("{name}/1-ab"), Some(name))).collect();
            let mut owned: Vec<i32> = Vec::new();
            let mut sizes = Vec::new();
            for me in &all {
                let share = owned_by(me, &all, partitions);
                sizes.push(share.len());
                owned.extend(share);
            }
            owned.sort_unstable();
            prop_assert_eq!(owned, (0..partitions).collect::<Vec<_>>());
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1, "shares {:?}", sizes);
        }

        #[test]
        fn a_join_moves_about_the_new_members_share(names in pod_names(), new in "carrier-delivery-[a-z0-9]{6}", partitions in 1i32..130) {
            let before = owners(&names, partitions);
            let mut joined = names.clone();
            joined.push(new.clone());
            let after = owners(&joined, partitions);
            let gained = share_of(&after, &new);
            let moved = moved(&before, &after);
            prop_assert!(moved >= gained);
            prop_assert!(moved <= bound(gained, names.len()), "{} moved, {} to the new member, {} members, {} partitions", moved, gained, names.len(), partitions);
            let balance = loads(&after, &joined);
            prop_assert!(balance.iter().max().unwrap() - balance.iter().min().unwrap() <= 1);
        }

        #[test]
        fn a_leave_moves_about_the_leavers_share(names in pod_names(), leaver in 0usize..8, partitions in 1i32..130) {
            prop_assume!(names.len() >= 2);
            let leaver = names[leaver % names.len()].clone();
            let before = owners(&names, partitions);
            let rest: Vec<String> = names.iter().filter(|name| **name != leaver).cloned().collect();
            let after = owners(&rest, partitions);
            let lost = share_of(&before, &leaver);
            let moved = moved(&before, &after);
            prop_assert!(moved >= lost);
            prop_assert!(moved <= bound(lost, rest.len()), "{} moved, {} of the leaver, {} members left, {} partitions", moved, lost, rest.len(), partitions);
        }

        #[test]
        fn a_member_coming_back_under_its_instance_gets_its_share_back(names in pod_names(), partitions in 1i32..130) {
            let first: Vec<Member> = names.iter().map(|name| member(&format!("{name}/1-aa"), Some(name))).collect();
            // Every process restarted: new member IDs, the same instances.
            let second: Vec<Member> = names.iter().map(|name| member(&format!("{name}/2-bb"), Some(name))).collect();
            for (old, new) in first.iter().zip(&second) {
                prop_assert_eq!(owned_by(old, &first, partitions), owned_by(new, &second, partitions));
            }
        }
    }

    #[test]
    fn every_partition_has_exactly_one_owner() {
        for count in 1..6 {
            let all = members(&["a", "b", "c", "d", "e"][..count]);
            for partitions in 0..9 {
                let mut owned: Vec<i32> = all.iter().flat_map(|m| owned_by(m, &all, partitions)).collect();
                owned.sort();
                assert_eq!(owned, (0..partitions).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn shares_differ_by_at_most_one() {
        let all = members(&["a", "b", "c"]);
        let mut sizes: Vec<usize> = all.iter().map(|m| owned_by(m, &all, 8).len()).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![2, 3, 3]);
    }

    #[test]
    fn a_member_not_yet_listed_owns_nothing() {
        assert!(owned_by(&member("new", Some("new")), &members(&["a", "b"]), 4).is_empty());
        assert_eq!(
            owned_by(&member("a", Some("a")), &members(&["a"]), 3),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn the_weights_never_change() {
        // Every member of every version must rank alike: these values are part of the protocol
        // (checked against an independent FNV-1a + fmix64 in Python when they were pinned).
        assert_eq!(weight("", 0), 0x461d_c8fd_9d1f_20e2);
        assert_eq!(weight("carrier-delivery-0", 7), 0x0668_368d_cc66_9c2c);
        let all = members(&["carrier-delivery-0", "carrier-delivery-1", "carrier-delivery-2"]);
        let shares: Vec<Vec<i32>> = all.iter().map(|m| owned_by(m, &all, 12)).collect();
        assert_eq!(
            shares,
            vec![vec![1, 3, 4, 11], vec![0, 6, 8, 10], vec![2, 5, 7, 9]]
        );
    }

    #[test]
    fn a_member_of_an_older_version_keeps_everyone_on_the_modulo_rule() {
        let all = vec![
            member("a/1", Some("pod-a")),
            member("b/1", None),
            member("c/1", Some("pod-c")),
        ];
        assert_eq!(owned_by(&all[0], &all, 7), vec![0, 3, 6]);
        assert_eq!(owned_by(&all[2], &all, 7), vec![2, 5]);
    }

    #[test]
    fn two_processes_of_one_instance_both_want_its_share_and_the_others_do_not_move() {
        let three = vec![
            member("a/1", Some("pod-a")),
            member("b/1", Some("pod-b")),
            member("c/1", Some("pod-c")),
        ];
        let mut surge = three.clone();
        surge.push(member("a/2", Some("pod-a")));
        for me in &three {
            assert_eq!(owned_by(me, &three, 16), owned_by(me, &surge, 16));
        }
        assert_eq!(owned_by(&surge[3], &surge, 16), owned_by(&three[0], &three, 16));
    }

    /// Issue 12 §6, measured: partitions that change owner when one member joins or leaves,
    /// sticky shares against `p % n`, averaged over 200 sets of pod-like names
    /// (`cargo test -p carrier-kafka --lib movement -- --nocapture` prints the table).
    #[test]
    fn movement_against_the_modulo_rule() {
        let modulo = |instances: &[String], partitions: i32| -> Vec<String> {
            let mut sorted = instances.to_vec();
            sorted.sort_unstable();
            (0..partitions)
                .map(|p| sorted[p as usize % sorted.len()].clone())
                .collect()
        };
        let trials = 200;
        println!("| P | n | join: minimum | sticky | p % n | leave: minimum | sticky | p % n |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for partitions in [12, 24, 64] {
            for count in 2..=6usize {
                let mut sums = [0usize; 6];
                for trial in 0..trials {
                    let names: Vec<String> = (0..=count)
                        .map(|index| {
                            format!(
                                "carrier-delivery-{:08x}",
                                weight(&format!("{trial}"), index as i32) as u32
                            )
                        })
                        .collect();
                    let (old, new) = names.split_at(count);
                    let old = old.to_vec();
                    let mut joined = old.clone();
                    joined.push(new[0].clone());
                    let rest = old[1..].to_vec();
                    let sticky = owners(&old, partitions);
                    let sticky_joined = owners(&joined, partitions);
                    let sticky_rest = owners(&rest, partitions);
                    let plain = modulo(&old, partitions);
                    sums[0] += share_of(&sticky_joined, &new[0]);
                    sums[1] += moved(&sticky, &sticky_joined);
                    sums[2] += moved(&plain, &modulo(&joined, partitions));
                    sums[3] += share_of(&sticky, &old[0]);
                    sums[4] += moved(&sticky, &sticky_rest);
                    sums[5] += moved(&plain, &modulo(&rest, partitions));
                }
                let mean = |sum: usize| sum as f64 / trials as f64;
                println!(
                    "| {partitions} | {count} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    mean(sums[0]),
                    mean(sums[1]),
                    mean(sums[2]),
                    mean(sums[3]),
                    mean(sums[4]),
                    mean(sums[5])
                );
                assert!(
                    sums[1] < sums[2],
                    "P={partitions} n={count}: a join moves fewer than p % n"
                );
                assert!(
                    sums[4] <= sums[5],
                    "P={partitions} n={count}: a leave moves no more than p % n"
                );
                assert!(
                    mean(sums[1]) <= 1.5 * mean(sums[0]) + 1.0,
                    "P={partitions} n={count}: a join moves about the new share"
                );
            }
        }
    }

    /// The chaos scenarios `rolling-restart-delivery*`, counted: partition moves (changes of
    /// owner) while 3 members are replaced one at a time, averaged over 200 sets of names.
    /// Deployment: a replacement under a new name joins, then the old member leaves. StatefulSet:
    /// the member leaves, then comes back under its name. Same-name surge: a replacement under
    /// the old one's instance joins, then the old one leaves. Before sticky shares, every
    /// process was a member of its own (a new ID at every start) under `p % n`.
    #[test]
    fn rolling_restart_moves_against_the_modulo_rule() {
        type Rule = fn(&[String], i32) -> Vec<String>;
        let modulo: Rule = |instances, partitions| {
            let mut sorted = instances.to_vec();
            sorted.sort_unstable();
            (0..partitions)
                .map(|p| sorted[p as usize % sorted.len()].clone())
                .collect()
        };
        let sticky: Rule = owners;
        let trials = 200;
        println!("| P | Deployment, p % n | Deployment, sticky | StatefulSet, p % n | StatefulSet, sticky | same-name surge, sticky |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for partitions in [4, 12, 64] {
            let mut sums = [0usize; 5];
            for trial in 0..trials {
                let name = |index: usize| {
                    format!(
                        "carrier-delivery-{:08x}",
                        weight(&format!("roll-{trial}"), index as i32) as u32
                    )
                };
                for (slot, rule, same_names) in [
                    (0, modulo, false),
                    (1, sticky, false),
                    (2, modulo, false),
                    (3, sticky, true),
                ] {
                    let mut members: Vec<String> = (0..3).map(name).collect();
                    let mut current = rule(&members, partitions);
                    let mut moves = 0;
                    for step in 0..3 {
                        let old = members[step].clone();
                        let new = if same_names { old.clone() } else { name(3 + step) };
                        let stages: Vec<Vec<String>> = if slot < 2 {
                            // Deployment: surge, then the old one leaves.
                            let mut surged = members.clone();
                            surged.push(new.clone());
                            let mut replaced = members.clone();
                            replaced[step] = new.clone();
                            vec![surged, replaced]
                        } else {
                            // StatefulSet: the old one leaves, then its replacement joins.
                            let mut without = members.clone();
                            without.remove(step);
                            let mut replaced = members.clone();
                            replaced[step] = new.clone();
                            vec![without, replaced]
                        };
                        for stage in stages {
                            let next = rule(&stage, partitions);
                            moves += moved(&current, &next);
                            current = next;
                        }
                        members[step] = new;
                    }
                    sums[slot] += moves;
                }
                // A replacement under the old one's instance joins before the old one leaves:
                // the instances never change, and only the leaver's share moves (to it).
                let members: Vec<String> = (0..3).map(name).collect();
                let current = sticky(&members, partitions);
                sums[4] += members
                    .iter()
                    .map(|member| share_of(&current, member))
                    .sum::<usize>();
            }
            let mean = |sum: usize| sum as f64 / trials as f64;
            println!(
                "| {partitions} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                mean(sums[0]),
                mean(sums[1]),
                mean(sums[2]),
                mean(sums[3]),
                mean(sums[4])
            );
            assert!(sums[1] < sums[0] && sums[3] < sums[2], "P={partitions}");
        }
    }
}
