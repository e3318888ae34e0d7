//! `flumen offsets reset --drop-state` on a stopped pipeline: checkpoint N with empty state for
//! the stateful partitions the move invalidates and, for the others, the state the group's
//! commits name, restored as an assignment restores it (this writer's checkpoints, another
//! writer's in the shared directory, or downloaded from the object store). N is written as any
//! checkpoint is (uploaded when the store is remote), then one transaction commits the new
//! offsets naming N.

use std::collections::BTreeMap;

use super::start::load_schemas;
use super::{Incarnation, Runner, Task};
use crate::checkpoint::CheckpointId;
use crate::pipeline::topology::Role;
use crate::pipeline::{Inputs, Result};
use crate::position::{NextOffset, Partition};

impl<'a> Runner<'a> {
    /// Commits `moves` (source offsets) with checkpoint N, in which each partition of
    /// `dropped` starts empty at its offset and every other stateful partition keeps the state
    /// its commit names. Returns N.
    pub fn reset_offline(
        inputs: &Inputs<'a>,
        moves: &[(Partition, NextOffset)],
        dropped: &[(Partition, NextOffset)],
    ) -> Result<CheckpointId> {
        let (mut runner, _) =
            Self::prepare(inputs, None, Incarnation::Offline, load_schemas(inputs)?)?;
        // what is dropped is never read: its checkpoint may be the reason for the reset
        let kept: Vec<Partition> = (0..runner.topology.source_partitions)
            .filter_map(|n| runner.topology.stateful_partition(n))
            .filter(|p| !dropped.iter().any(|(d, _)| d == p))
            .collect();
        let restored = runner.restore_tasks(&kept);
        runner.checkpoints.forget_downloads();
        for (p, task) in restored?.0 {
            runner.tasks.insert(p, task);
        }
        for (p, offset) in dropped {
            let role = runner.topology.role(&p.topic).unwrap_or(Role::Keyed);
            let state = runner.env.open_empty(&runner.live_dir(p))?;
            runner
                .tasks
                .insert(p.clone(), Task::new(role, Some(*offset), Some(state)));
        }
        let id = runner.checkpoints.next_id;
        let manifest = runner.checkpoints.write(
            id,
            runner
                .tasks
                .iter_mut()
                .map(|(p, t)| (p, t.next_offset, t.state.as_mut())),
        )?;
        let mut offsets: BTreeMap<Partition, NextOffset> = runner
            .tasks
            .iter()
            .filter_map(|(p, t)| t.next_offset.map(|o| (p.clone(), o)))
            .collect();
        offsets.extend(moves.iter().cloned());
        let offsets: Vec<(Partition, NextOffset)> = offsets.into_iter().collect();
        runner.txn.begin()?;
        runner.send_offsets(id, &offsets)?;
        runner.commit(id)?;
        // nothing deleted: the tool does not know which checkpoints other writers' commits name
        runner.checkpoints.committed(id, manifest, None)?;
        Ok(id)
    }
}
