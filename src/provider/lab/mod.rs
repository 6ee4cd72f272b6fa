//! The lab provider (lab.md). PLACEHOLDER: the signatures the CLI expects
//! (src/cli/world.rs); replace this whole file.

use std::path::Path;

use crate::plan::FailbackPlan;
use crate::provider::{
    BoxFuture, FailbackRequest, ProgressFn, Provider, ProviderError, ProviderResult, World,
};

#[derive(Debug, Default)]
pub struct InitOptions {}

pub fn exists(dir: &Path) -> bool {
    dir.join("world.json").exists()
}

pub fn init(_dir: &Path, _plan: &FailbackPlan, _opts: &InitOptions) -> Result<(), String> {
    Err("not built yet".into())
}

pub struct LabProvider;

impl LabProvider {
    pub fn open(_dir: &Path) -> Result<LabProvider, String> {
        Err("not built yet".into())
    }
}

impl Provider for LabProvider {
    fn observe<'a>(&'a self, _plan: &'a FailbackPlan) -> BoxFuture<'a, ProviderResult<World>> {
        Box::pin(async { Err(ProviderError::Failed("not built".into())) })
    }
    fn start_failback<'a>(
        &'a self,
        _req: &'a FailbackRequest,
        _p: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async { Err(ProviderError::Failed("not built".into())) })
    }
    fn complete<'a>(&'a self, _vm: &'a str, _p: ProgressFn) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async { Err(ProviderError::Failed("not built".into())) })
    }
    fn commit<'a>(&'a self, _vm: &'a str) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async { Err(ProviderError::Failed("not built".into())) })
    }
    fn reverse_replicate<'a>(
        &'a self,
        _vm: &'a str,
        _p: ProgressFn,
    ) -> BoxFuture<'a, ProviderResult<()>> {
        Box::pin(async { Err(ProviderError::Failed("not built".into())) })
    }
}
