//! Which partitions a member should own, given the live members: every member computes the
//! same answer from the same list, so nobody has to hand assignments out. The leases make a
//! disagreement (two members with different lists, for a moment) safe: a partition is taken
//! only once its previous owner let it go or its lease ran out.

/// The partitions of `0..partitions` that `member` should own among `members` (sorted, live):
/// partition `p` goes to the member at `p % members.len()`. Empty when `member` is not listed
/// (its own heartbeat has not been seen yet).
pub fn owned_by(member: &str, members: &[String], partitions: i32) -> Vec<i32> {
    let Some(index) = members.iter().position(|m| m == member) else {
        return Vec::new();
    };
    (0..partitions)
        .filter(|p| *p as usize % members.len() == index)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn every_partition_has_exactly_one_owner() {
        for count in 1..6 {
            let all = members(&["a", "b", "c"][..count.min(3)]);
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
        let sizes: Vec<usize> = all.iter().map(|m| owned_by(m, &all, 8).len()).collect();
        assert_eq!(sizes, vec![3, 3, 2]);
    }

    #[test]
    fn a_member_not_yet_listed_owns_nothing() {
        assert!(owned_by("new", &members(&["a", "b"]), 4).is_empty());
        assert_eq!(owned_by("a", &members(&["a"]), 3), vec![0, 1, 2]);
    }
}
