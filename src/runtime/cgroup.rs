// PLACEHOLDER until wt/cgroup merges
#[derive(Debug, thiserror::Error)]
#[error("cgroup")]
pub struct CgroupError;
pub struct MachineCgroup;
impl MachineCgroup {
    pub fn create(_p: &crate::plan::Cgroup) -> Result<Option<MachineCgroup>, CgroupError> {
        Ok(None)
    }
    pub fn from_plan(_p: &crate::plan::Cgroup) -> Option<MachineCgroup> {
        None
    }
    pub fn add(&self, _pid: i32) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn remove(self) -> Result<(), CgroupError> {
        Ok(())
    }
}
