//! The handlers of dataspaces: `ds`, `share`, `copy`, `copy_long`, `resize`, `close`,
//! `close_all` and `info`.

use memkit_dataspace::{ClientId, CopyLength, CopyRequest, DmFlags, FactoryId, MemphysOpenRequest};
use memkit_types::{PhysAddr, PhysPlacement};

use super::parse::narrow;
use super::{Command, Res, Session, rights_of};

impl Session<'_> {
    pub(super) fn op_ds(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let size = a.number(1)?;
        let mut flags = DmFlags::empty();
        for (word, f) in
            [("contiguous", DmFlags::CONTIGUOUS), ("pinned", DmFlags::PINNED), ("superpages", DmFlags::SUPERPAGES)]
        {
            if a.has(word) {
                flags |= f;
            }
        }
        let pool: u32 = narrow(a.option_number("pool")?.unwrap_or(0), "pool")?;
        let placement = match a.option_number("at")? {
            Some(p) => PhysPlacement::Fixed(PhysAddr::try_new(p).map_err(|e| e.to_string())?),
            None => PhysPlacement::AnyAddr,
        };
        let align = u32::from(a.align(12)?);
        let owner = a.owner()?;
        let id = self
            .h
            .system
            .lock(|s| {
                s.manager.memphys_open(
                    FactoryId::ROOT,
                    owner,
                    MemphysOpenRequest::new(pool, size).placed(placement).align(align).flags(flags).name(name),
                )
            })
            .map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    pub(super) fn op_share(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let ds = self.ds(a.text(1)?)?;
        let rights = rights_of(a.option_text("rights")?.unwrap_or("r"))?;
        let id = self.h.system.lock(|s| s.manager.share(ds, rights)).map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    pub(super) fn op_copy(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let src = self.ds(a.text(1)?)?;
        let flags = if a.has("cow") { DmFlags::COW } else { DmFlags::empty() };
        let owner = a.owner()?;
        let id = self
            .h
            .system
            .lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.copy(owner, src, flags, name, &mut r)
            })
            .map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    pub(super) fn op_copy_long(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let src = self.ds(a.text(1)?)?;
        let (so, dof, len) = (a.number(2)?, a.number(3)?, a.number(4)?);
        let flags = if a.has("cow") { DmFlags::COW } else { DmFlags::empty() };
        let owner = a.owner()?;
        let id = self
            .h
            .system
            .lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.copy_long(
                    owner,
                    src,
                    CopyRequest::new(so, dof, CopyLength::Bytes(len)).flags(flags).name(name),
                    &mut r,
                )
            })
            .map_err(|e| e.to_string())?;
        self.names.dataspaces.insert(name.to_string(), id);
        Ok(())
    }

    pub(super) fn op_resize(&mut self, a: &Command) -> Res {
        let ds = self.ds(a.text(0)?)?;
        let size = a.number(1)?;
        let owner = a.owner()?;
        self.h
            .system
            .lock(|s| {
                let (m, mut r) = s.manager_and_revoker();
                m.resize(owner, ds, size, &mut r)
            })
            .map_err(|e| e.to_string())
    }

    pub(super) fn op_close(&mut self, a: &Command) -> Res {
        let ds = self.ds(a.text(0)?)?;
        let owner = a.owner()?;
        // The name stays: it now names a closed dataspace, so that later operations on it
        // reach the manager and fail there (a dataspace id is never reused).
        self.h.system.lock(|s| s.manager.close(owner, ds)).map_err(|e| e.to_string())
    }

    pub(super) fn op_close_all(&mut self, a: &Command) -> Res {
        let task: u32 = narrow(a.number(0)?, "TASK")?;
        let client = ClientId::new(task, 0);
        let n =
            self.h.system.lock(|s| s.manager.close_all(client, client, DmFlags::empty())).map_err(|e| e.to_string())?;
        self.out.push(format!("closed {n} dataspaces of task {task}"));
        Ok(())
    }

    pub(super) fn op_info(&mut self, a: &Command) -> Res {
        let ds = self.ds(a.text(0)?)?;
        let line = self
            .h
            .system
            .lock(|s| {
                s.manager.info(ds).map(|i| {
                    format!(
                        "{}: {} bytes, owner {}, {:?}, pool {}, refs {}",
                        i.name, i.size, i.owner, i.kind, i.pool, i.refs
                    )
                })
            })
            .map_err(|e| e.to_string())?;
        self.out.push(line);
        Ok(())
    }
}
