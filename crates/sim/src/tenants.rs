//! The tenants a run spreads its calls over (`--tenants 3,1,1`): each its own `AccountSid` and `To`
//! number (so either `TENANT_KEY` tells them apart), and a fixed order that keeps each to its share.

/// One tenant of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// `t1`, `t2`, … in the order given.
    pub name: String,
    pub account_sid: String,
    pub to: String,
    pub weight: u32,
}

/// `--tenants`: weights, comma-separated (`3,1,1,1`: the first tenant places half the calls).
pub fn parse(spec: &str) -> Result<Vec<Tenant>, String> {
    let weights = spec
        .split(',')
        .map(|w| match w.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{w:?} is not a positive weight")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if weights.len() > 9999 {
        return Err("at most 9999 tenants".into());
    }
    Ok(weights
        .into_iter()
        .enumerate()
        .map(|(i, weight)| tenant(i + 1, weight))
        .collect())
}

/// Tenant `n` (1-based): `AC` and 32 hex digits ending in `n`, and `+1500555nnnn`; tenant 1 has
/// the number a run without tenants calls.
fn tenant(n: usize, weight: u32) -> Tenant {
    Tenant {
        name: format!("t{n}"),
        account_sid: format!("AC{n:032x}"),
        to: format!("+1500555{n:04}"),
        weight,
    }
}

/// Which tenant places each call, in launch order: smooth weighted round robin, so every prefix
/// of the run keeps each tenant near its share (a flood arrives interleaved with the others).
pub struct Rotation {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl Rotation {
    pub fn new(tenants: &[Tenant]) -> Self {
        let weights: Vec<i64> = tenants.iter().map(|t| i64::from(t.weight)).collect();
        Self {
            current: vec![0; weights.len()],
            total: weights.iter().sum(),
            weights,
        }
    }

    /// The next call's tenant (its index), `None` when the run has no tenants.
    pub fn next_tenant(&mut self) -> Option<usize> {
        if self.weights.is_empty() {
            return None;
        }
        for (current, weight) in self.current.iter_mut().zip(&self.weights) {
            *current += weight;
        }
        let (best, _) = self
            .current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))?;
        self.current[best] -= self.total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_give_shares_in_an_interleaved_order() {
        let tenants = parse("3,1,1,1").unwrap();
        assert_eq!(tenants.len(), 4);
        assert_eq!(tenants[0].account_sid.len(), 34);
        assert_eq!(tenants[0].to, "+15005550001");
        assert_eq!(tenants[3].account_sid, format!("AC{}4", "0".repeat(31)));
        let mut rotation = Rotation::new(&tenants);
        for _ in 0..3 {
            let mut shares = [0; 4];
            let round: Vec<usize> = (0..6).filter_map(|_| rotation.next_tenant()).collect();
            round.iter().for_each(|t| shares[*t] += 1);
            assert_eq!(shares, [3, 1, 1, 1], "{round:?}");
            // The flood never comes more than twice in a row.
            assert!(round.windows(3).all(|w| w != [0, 0, 0]), "{round:?}");
        }
        assert!(parse("2,0").is_err());
        assert!(parse("x").is_err());
        assert_eq!(Rotation::new(&[]).next_tenant(), None);
    }
}
