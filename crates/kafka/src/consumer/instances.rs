//! Other live members naming this member's instance (design.md, "Instances"). A process
//! restarted under its `kafka.instance_id` sees its predecessor's heartbeat row until that
//! expires, at most a lease later: nothing to report. A row that stays live longer is renewed —
//! two processes claim the instance (a replacement started before its predecessor stopped, or
//! one `instance_id` given to two pods): reported once. Either way both want the instance's
//! share, and the leases give each partition to one of them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use carrier_store::leases::Member;

/// What one look at the live members found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// Members naming this instance, seen for the first time.
    pub appeared: Vec<String>,
    /// Members naming this instance for longer than a lease, not reported before.
    pub persisting: Vec<String>,
    /// Members naming this instance for longer than a lease, now.
    pub duplicates: usize,
}

pub(crate) struct Duplicates {
    lease: Duration,
    /// Member ID → since when it is seen, and whether it was reported.
    seen: HashMap<String, (Instant, bool)>,
}

impl Duplicates {
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            seen: HashMap::new(),
        }
    }

    /// Looks at the live `members` (at `now`) for others naming `me`'s instance.
    pub fn observe(&mut self, me: &Member, members: &[Member], now: Instant) -> Observed {
        let others: Vec<&str> = members
            .iter()
            .filter(|member| {
                member.id != me.id && member.instance.is_some() && member.instance == me.instance
            })
            .map(|member| member.id.as_str())
            .collect();
        self.seen.retain(|id, _| others.contains(&id.as_str()));
        let mut observed = Observed::default();
        for other in others {
            let (since, reported) = self.seen.entry(other.to_owned()).or_insert_with(|| {
                observed.appeared.push(other.to_owned());
                (now, false)
            });
            if now.duration_since(*since) > self.lease {
                observed.duplicates += 1;
                if !*reported {
                    *reported = true;
                    observed.persisting.push(other.to_owned());
                }
            }
        }
        observed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, instance: &str) -> Member {
        Member {
            id: id.into(),
            instance: Some(instance.into()),
        }
    }

    #[test]
    fn a_predecessor_that_expires_is_not_reported_and_a_live_duplicate_is_reported_once() {
        let lease = Duration::from_secs(10);
        let mut watch = Duplicates::new(lease);
        let me = member("pod-0/2-b", "pod-0");
        let start = Instant::now();
        let with_predecessor = [
            member("pod-0/1-a", "pod-0"),
            me.clone(),
            member("pod-1/1-c", "pod-1"),
        ];
        let seen = watch.observe(&me, &with_predecessor, start);
        assert_eq!(seen.appeared, ["pod-0/1-a"]);
        assert!(seen.persisting.is_empty());
        // Its row expired within the lease: gone, never reported.
        let alone = [me.clone(), member("pod-1/1-c", "pod-1")];
        assert_eq!(watch.observe(&me, &alone, start + lease / 2), Observed::default());

        // Another process stays live under the same instance past a lease: reported once.
        let with_twin = [me.clone(), member("pod-0/3-d", "pod-0")];
        assert_eq!(
            watch.observe(&me, &with_twin, start + lease).appeared,
            ["pod-0/3-d"]
        );
        assert_eq!(watch.observe(&me, &with_twin, start + lease * 2).duplicates, 0);
        let reported = watch.observe(&me, &with_twin, start + lease * 2 + Duration::from_millis(1));
        assert_eq!(reported.persisting, ["pod-0/3-d"]);
        assert_eq!(reported.duplicates, 1);
        let again = watch.observe(&me, &with_twin, start + lease * 3);
        assert!(again.persisting.is_empty(), "reported once");
        assert_eq!(again.duplicates, 1);
    }

    #[test]
    fn members_without_an_instance_are_nobodys_duplicates() {
        let mut watch = Duplicates::new(Duration::from_secs(1));
        let me = Member {
            id: "a".into(),
            instance: None,
        };
        let legacy = Member {
            id: "b".into(),
            instance: None,
        };
        assert_eq!(
            watch.observe(&me, &[me.clone(), legacy], Instant::now()),
            Observed::default()
        );
    }
}
