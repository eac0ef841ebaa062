//! The handlers of the frame allocator: `frames`, `free_frames` and `pools`.

use memkit_types::{FrameCount, FrameSource, Order, PhysAddr};

use super::parse::narrow;
use super::{Command, Res, Session};
use crate::hosted;

impl Session<'_> {
    pub(super) fn op_frames(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let pool_id: usize = narrow(a.number(1)?, "POOL")?;
        let pool = self.h.pools.pool(pool_id).ok_or_else(|| format!("pool {pool_id} has no memory"))?;
        let count = FrameCount::new(a.number(2)?);
        let below = match a.option_number("below")? {
            Some(v) => Some(PhysAddr::try_new(v).map_err(|e| e.to_string())?),
            None => None,
        };
        let frame = FrameSource::allocate(pool.allocator(), count, Order::ZERO, below).map_err(|e| e.to_string())?;
        self.out.push(format!("frames {name} at {:#x}", frame.start_address().as_u64()));
        self.names.frames.insert(name.to_string(), (pool_id, frame, count, false));
        Ok(())
    }

    pub(super) fn op_free_frames(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let entry = self.names.frames.get_mut(name).ok_or_else(|| format!("no frames '{name}'"))?;
        let (pool, frame, count, freed) = *entry;
        if freed {
            // The name stays so that this is an error; the frames may be someone else's now.
            return Err(format!("frames '{name}' were given back already"));
        }
        let p = self.h.pools.pool(pool).ok_or("no pool")?;
        FrameSource::free(p.allocator(), frame, count).map_err(|e| e.to_string())?;
        entry.3 = true;
        Ok(())
    }

    pub(super) fn op_pools(&mut self, _: &Command) -> Res {
        self.out.push(hosted::pool_table(self.h.pools.stats()));
        Ok(())
    }
}
