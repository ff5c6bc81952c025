//! Partition leases: which member of a consumer group may work on which partition, until when,
//! and the offset it has committed. The consumer's coordinator (`carrier_kafka::consumer`)
//! drives them; services that write state belonging to a partition hold a [`Fence`] in the
//! writing transaction so a previous owner's late write is refused.
//!
//! All times are Postgres' `now()`: members' clocks never decide who owns a partition. A member
//! keeps its own, shorter, deadline from the moment it *asked* (see the coordinator).

use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::PgConnection;

/// One member's view of the lease tables of a group on a topic.
#[derive(Clone)]
pub struct Leases {
    pool: PgPool,
    group: String,
    topic: String,
    member: String,
    instance: String,
}

/// A live member of a group, as its heartbeat row shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique to one process (a restarted process is a new member): the owner of its leases.
    pub id: String,
    /// The identity its share of partitions is computed from: its configured instance id (a
    /// pod's name), else its ID. Two live members may name the same instance (a replacement
    /// started before its predecessor stopped, or a misconfiguration); they never share a
    /// lease. `None` for a member of a Carrier version before instances were recorded.
    pub instance: Option<String>,
}

/// What [`Leases::glance`] saw: the live members' IDs, sorted, and the free partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Glance {
    pub members: Vec<String>,
    pub free: Vec<i32>,
}

/// A lease just taken: its epoch, and where the previous owner left off in which stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    pub epoch: i64,
    pub committed_offset: Option<i64>,
    /// The stream generation the committed offset (and state keyed by offsets) belongs to.
    pub generation: i64,
    /// A record of that stream, to check the partition still holds it.
    pub anchor: Option<Anchor>,
}

/// One record of a partition's stream: its offset and a digest of what it holds. Another
/// record at that offset means the stream was replaced (the topic recreated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub offset: i64,
    pub digest: Vec<u8>,
}

/// Proof of ownership for a write: one partition at one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub owner: String,
    pub epoch: i64,
}

/// A write's fence no longer holds: another member owns the partition, or the lease expired.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("the lease of partition {partition} (epoch {epoch}) is no longer held")]
    Lost { partition: i32, epoch: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl Fence {
    /// Checks, inside the caller's transaction, that this lease is still held and unexpired,
    /// and keeps it so until the transaction ends: the row is share-locked, and a new owner's
    /// takeover (an UPDATE of it) waits for the commit. Either the write commits while the lease
    /// is held, or it is refused.
    pub async fn hold(&self, tx: &mut PgConnection) -> Result<(), FenceError> {
        let held: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM partition_leases
              WHERE group_id = $1 AND topic = $2 AND partition = $3
                AND owner = $4 AND epoch = $5 AND expires_at > now()
              FOR SHARE",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(self.partition)
        .bind(&self.owner)
        .bind(self.epoch)
        .fetch_optional(&mut *tx)
        .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(FenceError::Lost {
                partition: self.partition,
                epoch: self.epoch,
            }),
        }
    }
}

fn interval(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl Leases {
    /// The leases of `member`, whose instance is its own ID until [`Leases::with_instance`].
    pub fn new(pool: PgPool, group: &str, topic: &str, member: &str) -> Self {
        Self {
            pool,
            group: group.to_owned(),
            topic: topic.to_owned(),
            member: member.to_owned(),
            instance: member.to_owned(),
        }
    }

    /// The same member, recorded as an instance of `instance` (its share is computed from it).
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = instance.to_owned();
        self
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn fence(&self, partition: i32, epoch: i64) -> Fence {
        Fence {
            group: self.group.clone(),
            topic: self.topic.clone(),
            partition,
            owner: self.member.clone(),
            epoch,
        }
    }

    /// Refreshes this member's row (live for `lease` more) and returns every live member,
    /// sorted. Rows of members gone for an hour are deleted on the way.
    pub async fn heartbeat(&self, lease: Duration) -> Result<Vec<String>, sqlx::Error> {
        let (members, _) = self.heartbeat_and_renew(&[], lease).await?;
        Ok(members.into_iter().map(|member| member.id).collect())
    }

    /// One round trip every quarter of a lease: refreshes this member's row, extends the
    /// unexpired leases among `held` (partition, epoch) by `lease`, and returns every live
    /// member (sorted by ID) and the partitions extended. A partition missing from the latter
    /// is no longer this member's. One statement, because a slow Postgres must cost one delay
    /// here, not five: renewals that come late lose leases.
    pub async fn heartbeat_and_renew(
        &self,
        held: &[(i32, i64)],
        lease: Duration,
    ) -> Result<(Vec<Member>, Vec<i32>), sqlx::Error> {
        let (partitions, epochs): (Vec<i32>, Vec<i64>) = held.iter().copied().unzip();
        // The outer SELECT does not see the CTEs' own writes (one snapshot): this member is
        // added from `me`, and the gone members are left out by their expiry.
        let (ids, instances, renewed): (Vec<String>, Vec<Option<String>>, Vec<i32>) = sqlx::query_as(
            "WITH me AS (
                INSERT INTO consumer_members (group_id, topic, member_id, instance_id, expires_at)
                VALUES ($1, $2, $3, $7, now() + make_interval(secs => $6))
                ON CONFLICT (group_id, topic, member_id)
                DO UPDATE SET expires_at = excluded.expires_at, instance_id = excluded.instance_id
                RETURNING member_id, instance_id
             ), renewed AS (
                UPDATE partition_leases AS l
                   SET expires_at = now() + make_interval(secs => $6)
                  FROM unnest($4::int[], $5::bigint[]) AS h(partition, epoch)
                 WHERE l.group_id = $1 AND l.topic = $2 AND l.owner = $3
                   AND l.partition = h.partition AND l.epoch = h.epoch AND l.expires_at > now()
                RETURNING l.partition
             ), gone AS (
                DELETE FROM consumer_members
                 WHERE group_id = $1 AND topic = $2 AND expires_at < now() - interval '1 hour'
             ), live AS (
                SELECT member_id, instance_id FROM consumer_members
                 WHERE group_id = $1 AND topic = $2 AND expires_at > now() AND member_id <> $3
                UNION ALL SELECT member_id, instance_id FROM me
             )
             SELECT
                (SELECT array_agg(member_id ORDER BY member_id) FROM live),
                (SELECT array_agg(instance_id ORDER BY member_id) FROM live),
                (SELECT coalesce(array_agg(partition), '{}') FROM renewed)",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(&self.member)
        .bind(&partitions)
        .bind(&epochs)
        .bind(interval(lease))
        .bind(&self.instance)
        .fetch_one(&self.pool)
        .await?;
        let members = ids
            .into_iter()
            .zip(instances)
            .map(|(id, instance)| Member { id, instance })
            .collect();
        Ok((members, renewed))
    }

    /// A read-only look between heartbeats: the live members' IDs (sorted) and the partitions
    /// whose lease is free (released, expired or never taken). A member compares it with what
    /// its last heartbeat saw and moves at once when the group changed or a partition it wants
    /// was freed, instead of waiting up to a quarter of a lease (see the consumer's design.md,
    /// "Hand-over latency").
    pub async fn glance(&self) -> Result<Glance, sqlx::Error> {
        let (members, free): (Option<Vec<String>>, Option<Vec<i32>>) = sqlx::query_as(
            "SELECT
                (SELECT array_agg(member_id ORDER BY member_id) FROM consumer_members
                  WHERE group_id = $1 AND topic = $2 AND expires_at > now()),
                (SELECT array_agg(partition ORDER BY partition) FROM partition_leases
                  WHERE group_id = $1 AND topic = $2 AND (owner IS NULL OR expires_at <= now()))",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .fetch_one(&self.pool)
        .await?;
        Ok(Glance {
            members: members.unwrap_or_default(),
            free: free.unwrap_or_default(),
        })
    }

    /// Takes `partition` for `lease` if nobody holds it: never owned, released, or expired.
    /// `None` while another member's lease runs.
    pub async fn acquire(&self, partition: i32, lease: Duration) -> Result<Option<Acquired>, sqlx::Error> {
        type Row = (i64, Option<i64>, i64, Option<i64>, Option<Vec<u8>>);
        let row: Option<Row> = sqlx::query_as(
            "INSERT INTO partition_leases (group_id, topic, partition, owner, epoch, expires_at)
             VALUES ($1, $2, $3, $4, 1, now() + make_interval(secs => $5))
             ON CONFLICT (group_id, topic, partition) DO UPDATE
                SET owner = excluded.owner,
                    epoch = partition_leases.epoch + 1,
                    expires_at = excluded.expires_at,
                    changed_at = now()
              WHERE partition_leases.owner IS NULL OR partition_leases.expires_at <= now()
             RETURNING epoch, committed_offset, generation, anchor_offset, anchor_digest",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partition)
        .bind(&self.member)
        .bind(interval(lease))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(epoch, committed_offset, generation, anchor_offset, anchor_digest)| Acquired {
                epoch,
                committed_offset,
                generation,
                anchor: anchor_offset
                    .zip(anchor_digest)
                    .map(|(offset, digest)| Anchor { offset, digest }),
            },
        ))
    }

    /// The partition's stream is not the one its stored offset belongs to: starts the next
    /// generation (no committed offset, no anchor). Returns the new generation; `None` when the
    /// lease is no longer held.
    pub async fn start_generation(&self, partition: i32, epoch: i64) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "UPDATE partition_leases
                SET generation = generation + 1, committed_offset = NULL,
                    anchor_offset = NULL, anchor_digest = NULL, anchored_at = NULL, changed_at = now()
              WHERE group_id = $1 AND topic = $2 AND partition = $3 AND owner = $4 AND epoch = $5
                AND expires_at > now()
             RETURNING generation",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partition)
        .bind(&self.member)
        .bind(epoch)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records `anchor` as the held lease's record of its stream. False when the lease is no
    /// longer held.
    pub async fn set_anchor(&self, partition: i32, epoch: i64, anchor: &Anchor) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE partition_leases
                SET anchor_offset = $6, anchor_digest = $7, anchored_at = now()
              WHERE group_id = $1 AND topic = $2 AND partition = $3 AND owner = $4 AND epoch = $5
                AND expires_at > now()",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partition)
        .bind(&self.member)
        .bind(epoch)
        .bind(anchor.offset)
        .bind(&anchor.digest)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Extends the unexpired leases among `held` (partition, epoch) by `lease` (and this
    /// member's heartbeat); returns the partitions extended.
    pub async fn renew(&self, held: &[(i32, i64)], lease: Duration) -> Result<Vec<i32>, sqlx::Error> {
        Ok(self.heartbeat_and_renew(held, lease).await?.1)
    }

    /// Stores the committed offsets of held leases, (partition, epoch, offset) each; returns the
    /// partitions stored (an offset of a lease no longer held is refused).
    pub async fn commit(&self, offsets: &[(i32, i64, i64)]) -> Result<Vec<i32>, sqlx::Error> {
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        let partitions: Vec<i32> = offsets.iter().map(|o| o.0).collect();
        let epochs: Vec<i64> = offsets.iter().map(|o| o.1).collect();
        let committed: Vec<i64> = offsets.iter().map(|o| o.2).collect();
        sqlx::query_scalar(
            "UPDATE partition_leases AS l
                SET committed_offset = c.committed
               FROM unnest($4::int[], $5::bigint[], $6::bigint[]) AS c(partition, epoch, committed)
              WHERE l.group_id = $1 AND l.topic = $2 AND l.owner = $3
                AND l.partition = c.partition AND l.epoch = c.epoch AND l.expires_at > now()
             RETURNING l.partition",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(&self.member)
        .bind(&partitions)
        .bind(&epochs)
        .bind(&committed)
        .fetch_all(&self.pool)
        .await
    }

    /// Gives a lease up at once (its work is drained): the next owner need not wait for it to
    /// expire. False when it was not held any more.
    pub async fn release(&self, partition: i32, epoch: i64) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE partition_leases
                SET owner = NULL, expires_at = now(), changed_at = now()
              WHERE group_id = $1 AND topic = $2 AND partition = $3 AND owner = $4 AND epoch = $5",
        )
        .bind(&self.group)
        .bind(&self.topic)
        .bind(partition)
        .bind(&self.member)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes this member from the group (at a clean stop).
    pub async fn leave(&self) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM consumer_members WHERE group_id = $1 AND topic = $2 AND member_id = $3")
            .bind(&self.group)
            .bind(&self.topic)
            .bind(&self.member)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Committed offsets and owners of a group's partitions on a topic, for operators and tests.
pub async fn owners(
    pool: &PgPool,
    group: &str,
    topic: &str,
) -> Result<Vec<(i32, Option<String>, Option<i64>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT partition, CASE WHEN expires_at > now() THEN owner END, committed_offset
           FROM partition_leases WHERE group_id = $1 AND topic = $2 ORDER BY partition",
    )
    .bind(group)
    .bind(topic)
    .fetch_all(pool)
    .await
}
