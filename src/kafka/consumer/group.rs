//! The consumer group's membership as the broker describes it: who is a member (the offline
//! tools refuse while anyone is), and which writers are (a writer that is not may be fenced).

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;

use super::{Consumer, TIMEOUT};
use crate::kafka::{Result, client};

impl Consumer {
    /// `each` of the group's members, as the broker describes them.
    fn members<T>(
        &self,
        group: &str,
        each: impl Fn(&rdkafka::groups::GroupMemberInfo) -> Option<T>,
    ) -> Result<Vec<T>> {
        let list = self
            .inner
            .fetch_group_list(Some(group), TIMEOUT)
            .map_err(client("describe group"))?;
        Ok(list
            .groups()
            .iter()
            .flat_map(|g| g.members())
            .filter_map(each)
            .collect())
    }

    /// The group's members, as `client id (host)`.
    pub fn group_members(&self, group: &str) -> Result<Vec<String>> {
        self.members(group, |m| {
            Some(format!("{} ({})", m.client_id(), m.client_host()))
        })
    }

    /// The group's static members' instance ids (`group.instance.id`, which the daemon sets to
    /// each thread's transactional id): a static member's id is its instance id, a dash and a
    /// UUID (KIP-345).
    pub fn member_instances(&self, group: &str) -> Result<Vec<String>> {
        self.members(group, |m| instance_of(m.id()))
    }

    /// Waits until the consumer group has no members (a stopped static member stays one until
    /// its session times out), up to `timeout`; returns whether it emptied.
    pub fn wait_for_empty_group(&self, group: &str, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.members(group, |_| Some(()))?.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The instance id in a static member's id (`<instance>-<UUID>`), if it is one.
fn instance_of(member_id: &str) -> Option<String> {
    const UUID: usize = 36;
    let split = member_id.len().checked_sub(UUID + 1)?;
    let (instance, uuid) = (member_id.get(..split)?, member_id.get(split + 1..)?);
    let dashes = [8, 13, 18, 23];
    let is_uuid = member_id.as_bytes().get(split) == Some(&b'-')
        && uuid.char_indices().all(|(i, c)| {
            if dashes.contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    (is_uuid && !instance.is_empty()).then(|| instance.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_static_members_id_gives_its_instance_id() {
        let id = "flumen-counts-a-thread-1-0b6c1c39-3f0e-4d53-9a8e-5c0b5a3f7e21";
        assert_eq!(
            super::instance_of(id).as_deref(),
            Some("flumen-counts-a-thread-1")
        );
        // a dynamic member's id is its client id and a UUID too, but without the instance
        // it is no writer of ours; ids that are not `<x>-<UUID>` give nothing
        assert_eq!(super::instance_of("rdkafka-0b6c1c39"), None);
        assert_eq!(
            super::instance_of("-0b6c1c39-3f0e-4d53-9a8e-5c0b5a3f7e21"),
            None
        );
        assert_eq!(
            super::instance_of("x-0b6c1c39-3f0e-4d53-9a8e-5c0b5a3f7e2z"),
            None
        );
    }
}
