//! Factories (quotas carved out of their parent's) and the quota charges of tasks.

use memkit_types::{FrameSource, PhysMemory};

use super::{Factory, Manager, Quota};
use crate::error::{DestroyFactoryError, FactoryError, TaskError};
use crate::ids::{FactoryId, TaskCharge};

impl<S: FrameSource, M: PhysMemory> Manager<S, M> {
    pub(super) fn factory_mut(&mut self, f: FactoryId) -> Option<&mut Factory> {
        self.factories.get_mut(f.0 as usize).and_then(Option::as_mut)
    }

    pub(super) fn room(&self, f: FactoryId) -> Option<u64> {
        let fac = self.factories.get(f.0 as usize)?.as_ref()?;
        Some(fac.limit - fac.used)
    }

    /// `create_factory(limit)`: a factory nested in `parent`, whose `limit` bytes are charged
    /// to the parent until it is destroyed.
    ///
    /// # Errors
    /// [`FactoryError::InvalidFactory`], [`FactoryError::QuotaExceeded`] when the parent has
    /// less than `limit` left, [`FactoryError::NoHandle`].
    pub fn create_factory(&mut self, parent: FactoryId, limit: u64) -> Result<FactoryId, FactoryError> {
        let room = self.room(parent).ok_or(FactoryError::InvalidFactory(parent))?;
        if limit > room {
            return Err(FactoryError::QuotaExceeded(parent, limit));
        }
        let id = u32::try_from(self.factories.len())
            .map_err(|_| FactoryError::NoHandle(self.factories.iter().flatten().count() as u32))?;
        if let Some(p) = self.factory_mut(parent) {
            p.used += limit;
        }
        self.factories.push(Some(Factory { parent: Some(parent), limit, used: 0 }));
        Ok(FactoryId(id))
    }

    /// Destroys an empty factory (the release of its last handle, `dec_refcnt`), giving its
    /// limit back to its parent.
    ///
    /// # Errors
    /// [`DestroyFactoryError::InvalidFactory`] for an unknown factory or the root,
    /// [`DestroyFactoryError::InUse`] while anything is charged to it.
    pub fn destroy_factory(&mut self, f: FactoryId) -> Result<(), DestroyFactoryError> {
        let fac = self.factory_mut(f).ok_or(DestroyFactoryError::InvalidFactory(f))?;
        let Some(parent) = fac.parent else { return Err(DestroyFactoryError::InvalidFactory(f)) };
        if fac.used != 0 {
            return Err(DestroyFactoryError::InUse(f, fac.used));
        }
        let limit = fac.limit;
        self.factories[f.0 as usize] = None;
        if let Some(p) = self.factory_mut(parent) {
            p.used -= limit;
        }
        Ok(())
    }

    /// A factory's limit and usage.
    #[must_use]
    pub fn quota(&self, f: FactoryId) -> Option<Quota> {
        let fac = self.factories.get(f.0 as usize)?.as_ref()?;
        Some(Quota { limit: fac.limit, used: fac.used })
    }

    /// `create_task`: charges a new address space's `bytes` (its region map and page tables,
    /// which the region layer builds) to `factory`.
    ///
    /// # Errors
    /// [`TaskError::InvalidFactory`], [`TaskError::QuotaExceeded`].
    pub fn create_task(&mut self, factory: FactoryId, bytes: u64) -> Result<TaskCharge, TaskError> {
        let room = self.room(factory).ok_or(TaskError::InvalidFactory(factory))?;
        if bytes > room {
            return Err(TaskError::QuotaExceeded(factory, bytes));
        }
        let id = self.next_task;
        self.next_task = self.next_task.wrapping_add(1);
        if self.tasks.contains_key(&id) {
            return Err(TaskError::InvalidTask(id));
        }
        if let Some(fac) = self.factory_mut(factory) {
            fac.used += bytes;
        }
        self.tasks.insert(id, (factory, bytes));
        Ok(TaskCharge(id))
    }

    /// Gives a task's charge back to its factory.
    ///
    /// # Errors
    /// [`TaskError::InvalidTask`] if the charge was already given back.
    pub fn destroy_task(&mut self, task: TaskCharge) -> Result<(), TaskError> {
        let (factory, bytes) = self.tasks.remove(&task.0).ok_or(TaskError::InvalidTask(task.0))?;
        if let Some(fac) = self.factory_mut(factory) {
            fac.used -= bytes;
        }
        Ok(())
    }
}
