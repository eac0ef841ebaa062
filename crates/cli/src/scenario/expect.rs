//! The handlers of expectations: `expect fail`, `expect load`, `expect size`, `expect owner`
//! and `expect free`.

use memkit_dataspace::ClientId;
use memkit_types::FrameSource as _;

use super::parse::narrow;
use super::{Command, Res, Session, Value};

impl Session<'_> {
    pub(super) fn op_expect_fail(&mut self, a: &Command) -> Res {
        let Some(Value::Operation(inner)) = a.args.first() else {
            return Err("usage: expect fail OPERATION...".into());
        };
        match self.run(inner) {
            Ok(()) => Err(format!("expected '{}' to fail, it succeeded", inner.words.join(" "))),
            Err(e) => {
                self.out.push(format!("failed as expected: {e}"));
                Ok(())
            }
        }
    }

    pub(super) fn op_expect_load(&mut self, a: &Command) -> Res {
        let (name, offset, want) = (a.text(0)?, a.number(1)?, a.bytes(2)?);
        let got = self.load(name, offset, want.len())?;
        if got == want {
            Ok(())
        } else {
            Err(format!("expected {want:02x?} at {name}+{}, loaded {got:02x?}", a.raw(1)))
        }
    }

    pub(super) fn op_expect_size(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let ds = self.ds(name)?;
        let want = a.number(1)?;
        let got = self.h.system.lock(|s| s.manager.info(ds).map(|i| i.size)).map_err(|e| e.to_string())?;
        if got == want { Ok(()) } else { Err(format!("expected size {want} of {name}, it is {got}")) }
    }

    pub(super) fn op_expect_owner(&mut self, a: &Command) -> Res {
        let name = a.text(0)?;
        let ds = self.ds(name)?;
        let want = ClientId::new(narrow(a.number(1)?, "TASK")?, 0);
        let got = self.h.system.lock(|s| s.manager.info(ds).map(|i| i.owner)).map_err(|e| e.to_string())?;
        if got == want { Ok(()) } else { Err(format!("expected owner {want} of {name}, it is {got}")) }
    }

    pub(super) fn op_expect_free(&mut self, a: &Command) -> Res {
        let pool: usize = narrow(a.number(0)?, "POOL")?;
        let op = a.text(1)?;
        let n = a.number(2)?;
        let free = self
            .h
            .pools
            .pool(pool)
            .ok_or_else(|| format!("pool {pool} has no memory"))?
            .allocator()
            .free_frames()
            .get();
        let ok = match op {
            "=" | "==" => free == n,
            "<" => free < n,
            ">" => free > n,
            "<=" => free <= n,
            ">=" => free >= n,
            other => return Err(format!("comparison '{other}' (want = < > <= >=)")),
        };
        if ok { Ok(()) } else { Err(format!("expected pool {pool} free frames {op} {n}, it has {free}")) }
    }
}
