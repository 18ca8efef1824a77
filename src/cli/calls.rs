//! `prosaas-calls calls`: every live slot, reservations included: call SID, direction, tenant,
//! replica, status and age, oldest first.

use super::{Target, age, print_json, table};

/// # Errors
///
/// Redis unreachable, refusing the credentials, or answering something unexpected.
pub async fn run(target: &Target) -> anyhow::Result<()> {
    let calls = target.view()?.calls().await?;
    if target.json {
        return print_json(&calls);
    }
    if calls.is_empty() {
        super::emit("No live calls.\n")?;
        return Ok(());
    }
    let mut rows = table(&[
        "CALL SID",
        "DIRECTION",
        "TENANT",
        "REPLICA",
        "STATUS",
        "AGE",
        "LEASE LEFT",
    ]);
    for call in &calls {
        rows.add_row(vec![
            call.call_sid.clone(),
            call.direction.to_owned(),
            call.tenant.clone().unwrap_or_else(|| "-".into()),
            call.replica.clone().unwrap_or_else(|| "-".into()),
            call.status.clone().unwrap_or_else(|| "(no state)".into()),
            call.age_secs.map_or_else(|| "?".into(), age),
            if call.lease_left_ms < 0 {
                "lapsed".into()
            } else {
                age(u64::try_from(call.lease_left_ms).unwrap_or(0) / 1000)
            },
        ]);
    }
    super::emit(&format!("{rows}\n"))?;
    super::emit(&format!("{} live calls\n", calls.len()))?;
    Ok(())
}
