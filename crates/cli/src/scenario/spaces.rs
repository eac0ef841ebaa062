//! The handlers of spaces, areas and regions: `space`, `area`, `attach`, `detach`, `load`,
//! `store` and `regions`.

use memkit_host::HostSpaceId;
use memkit_region::{AttachRequest, DetachFlags, Flags, Remap};
use memkit_types::{PAGE_SIZE, VirtAddr};

use super::parse::narrow;
use super::{Command, DEFAULT_SPACE_SIZE, Res, Session, rights_of};

impl Session<'_> {
    pub(super) fn op_space(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let size = narrow(a.option_number("size")?.unwrap_or(DEFAULT_SPACE_SIZE), "SIZE")?;
        let id = self.h.system.create_space(size).map_err(|e| e.to_string())?;
        self.names.spaces.insert(name.to_string(), id);
        Ok(())
    }

    pub(super) fn op_area(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let space = self.space(a.text(1)?)?;
        let size: usize = narrow(a.number(2)?, "SIZE")?;
        let align = a.align(12)?;
        let at = match a.option_number("at")? {
            Some(v) => Some(VirtAddr::try_new(narrow(v, "VADDR")?).map_err(|e| e.to_string())?),
            None => None,
        };
        let start = self.h.system.lock(|s| {
            let window = s.region_map(space).map_err(|e| e.to_string())?.window_start();
            let (start, flags) = match at {
                Some(v) => (v, Flags::empty()),
                None => (window, Flags::SEARCH_ADDR),
            };
            s.reserve_area(space, start, size, flags, align, None)
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })?;
        self.names.areas.insert(name.to_string(), (space, start, size));
        self.out.push(format!("area {name} at {start}"));
        Ok(())
    }

    pub(super) fn op_attach(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        self.fresh(name)?;
        let space = self.space(a.text(1)?)?;
        let ds = self.ds(a.text(2)?)?;
        let ds_size = self.h.system.lock(|s| s.manager.info(ds).map(|i| i.size)).map_err(|e| e.to_string())?;
        let offset = a.option_number("offset")?.unwrap_or(0);
        let size: usize = match a.option_number("size")? {
            Some(v) => narrow(v, "SIZE")?,
            None => narrow(ds_size.saturating_sub(offset), "the dataspace's size")?,
        };
        let rights = rights_of(a.option_text("rights")?.unwrap_or("rw"))?;
        let align = a.align(12)?;
        let mut req = AttachRequest::new(ds, size, rights).offset(offset).align(align);
        let over = match a.option_text("over")? {
            Some(r) => {
                let (osp, start, _) = self.region(r)?;
                if osp != space {
                    return Err(format!("region '{r}' is in another space"));
                }
                if a.option_number("at")?.is_some() || a.option_text("in")?.is_some() {
                    return Err("attach: at=, in= and over= exclude each other".into());
                }
                Some(start)
            }
            None => None,
        };
        req = match (a.option_number("at")?, a.option_text("in")?) {
            _ if over.is_some() => req.at(over.unwrap_or(VirtAddr::zero())),
            (Some(_), Some(_)) => return Err("attach: at= and in= exclude each other".into()),
            (Some(v), None) => req.at(VirtAddr::try_new(narrow(v, "VADDR")?).map_err(|e| e.to_string())?),
            (None, Some(area)) => {
                let &(asp, start, _) = self.names.areas.get(area).ok_or_else(|| format!("no area '{area}'"))?;
                if asp != space {
                    return Err(format!("area '{area}' is in another space"));
                }
                let mut r = req.flags(Flags::IN_AREA);
                r.start = start;
                r
            }
            (None, None) => {
                let start =
                    self.h.system.lock(|s| s.region_map(space).map(|m| m.window_start())).map_err(|e| e.to_string())?;
                req.search(start)
            }
        };
        if a.has("eager") {
            req = req.flags(Flags::EAGER_MAP);
        }
        if a.has("replace") {
            if req.flags.contains(Flags::SEARCH_ADDR) {
                return Err("attach: replace needs at= or in=".into());
            }
            req = req.replacing();
        }
        let addr =
            self.h.system.lock(|s| s.attach(space, &req)).map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        let size = size.next_multiple_of(PAGE_SIZE);
        self.names.regions.insert(name.to_string(), (space, addr, size));
        self.out.push(format!("region {name} at {addr}, {size} bytes"));
        Ok(())
    }

    pub(super) fn op_protect(&mut self, a: &Command) -> Res {
        let (space, start, size) = self.region(a.text(0)?)?;
        let rights = rights_of(a.text(1)?)?;
        let off: usize = narrow(a.option_number("offset")?.unwrap_or(0), "OFF")?;
        let len: usize = match a.option_number("size")? {
            Some(v) => narrow(v, "SIZE")?,
            None => size.saturating_sub(off),
        };
        if off.checked_add(len).is_none_or(|e| e > size) || len == 0 {
            return Err(format!("protect: {off:#x}+{len:#x} is not inside the region ({size:#x} bytes)"));
        }
        let at = VirtAddr::try_new(start.as_usize() + off).map_err(|e| e.to_string())?;
        self.h.system.lock(|s| s.protect(space, at, len, rights)).map_err(|e| e.to_string())?.map_err(|e| e.to_string())
    }

    pub(super) fn op_remap(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let (space, start, size) = self.region(name)?;
        let new: usize = narrow(a.number(1)?, "SIZE")?;
        let over = match a.option_text("over")? {
            Some(r) => Some(self.region(r)?.1),
            None => None,
        };
        let how = match (a.option_number("at")?, a.has("move")) {
            _ if over.is_some() => Remap::Fixed(over.unwrap_or(VirtAddr::zero())),
            (Some(v), _) => Remap::Fixed(VirtAddr::try_new(narrow(v, "VADDR")?).map_err(|e| e.to_string())?),
            (None, true) => Remap::MayMove,
            (None, false) => Remap::InPlace,
        };
        let addr = self
            .h
            .system
            .lock(|s| s.remap(space, start, size, new, how))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let new = new.next_multiple_of(PAGE_SIZE);
        self.names.regions.insert(name.to_string(), (space, addr, new));
        self.out.push(format!("region {name} at {addr}, {new} bytes"));
        Ok(())
    }

    pub(super) fn op_detach(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let (space, addr, size) = self.region(name)?;
        self.h
            .system
            .lock(|s| s.detach(space, addr, size, DetachFlags::OVERLAP))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.names.regions.remove(name);
        Ok(())
    }

    /// Checks that `offset .. offset + len` lies inside region `name`, and returns the space
    /// and the first address. Whether each page can be served is `System::load`'s and
    /// `System::store`'s to say: they resolve every page first and report a refused or
    /// unservable access (rights, the dataspace's size, no frame left) as an error.
    pub(super) fn reach(&self, name: &str, off: u64, len: usize) -> Res<(HostSpaceId, VirtAddr)> {
        let (space, start, size) = self.region(name)?;
        let off: usize = narrow(off, "OFFSET")?;
        if off.checked_add(len).is_none_or(|e| e > size) {
            return Err(format!("{name}+{off:#x}..+{len}: outside the region ({size:#x} bytes)"));
        }
        Ok((space, VirtAddr::try_new(start.as_usize() + off).map_err(|e| e.to_string())?))
    }

    pub(super) fn load(&self, name: &str, offset: u64, len: usize) -> Res<Vec<u8>> {
        let (space, addr) = self.reach(name, offset, len)?;
        let mut buf = vec![0u8; len];
        self.h.system.load(space, addr, &mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    }

    pub(super) fn op_load(&mut self, a: &Command) -> Res {
        let (name, offset) = (a.text(0)?, a.number(1)?);
        let bytes = self.load(name, offset, narrow(a.number(2)?, "LEN")?)?;
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.out.push(format!("{name}+{}: {}", a.raw(1), hex.join(" ")));
        Ok(())
    }

    pub(super) fn op_store(&mut self, a: &Command) -> Res {
        let bytes = a.bytes(2)?;
        let (space, addr) = self.reach(a.text(0)?, a.number(1)?, bytes.len())?;
        self.h.system.store(space, addr, bytes).map_err(|e| e.to_string())
    }

    pub(super) fn op_regions(&mut self, a: &Command) -> Res {
        let space = self.space(a.text(0)?)?;
        let regions = self.h.system.lock(|s| s.region_map(space).map(|m| m.regions())).map_err(|e| e.to_string())?;
        for r in regions {
            self.out.push(format!(
                "{}..{:#x} {:?} offset {:#x} dataspace {}",
                r.start,
                r.start.as_usize() + r.size,
                r.rights,
                r.offset,
                r.dataspace
            ));
        }
        Ok(())
    }
}
