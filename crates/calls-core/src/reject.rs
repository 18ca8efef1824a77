//! Why the lifecycle turns a call away: the one reason a webhook's reject mode, a stream's 1013
//! close and `calls_rejected_total{reason}` all name (docs/reference.md#reject-modes).

/// Why a call was turned away; each maps to the configured reject mode (webhook) or close code 1013.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    MaxConcurrent,
    /// Under the global cap, but the call's tenant is at its own (docs/reference.md#tenants).
    TenantLimit,
    Draining,
    /// Redis lost its data moments ago; live calls are re-registering.
    Recovering,
    /// The state store did not answer: the limit cannot be guaranteed.
    StoreUnavailable,
}

impl RejectReason {
    /// Every reason, for metrics that must exist at zero from start-up.
    pub const ALL: [Self; 5] = [
        Self::MaxConcurrent,
        Self::TenantLimit,
        Self::Draining,
        Self::Recovering,
        Self::StoreUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConcurrent => "max_concurrent",
            Self::TenantLimit => "tenant_limit",
            Self::Draining => "draining",
            Self::Recovering => "recovering",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}
