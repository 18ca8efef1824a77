//! How a placed call ends on the callee's side: answered, no-answer, busy or failed; per number
//! (a test's fixed rule) or by a mix of proportions, assigned in a deterministic order.

use std::collections::HashMap;
use std::fmt;

/// What the far end does when the double dials it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Rings, is answered, talks for the talk time, hangs up: `completed`.
    Answered,
    /// Rings until the request's `Timeout` (or `--no-answer-secs`): `no-answer`.
    NoAnswer,
    /// Rings, then a busy signal: `busy`.
    Busy,
    /// Never rings (the carrier could not connect it): `failed`.
    Failed,
}

impl Outcome {
    pub const ALL: [Self; 4] = [Self::Answered, Self::NoAnswer, Self::Busy, Self::Failed];

    pub fn name(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::NoAnswer => "no-answer",
            Self::Busy => "busy",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|o| o.name() == text.trim())
            .ok_or_else(|| format!("{text:?}: expected answered, no-answer, busy or failed"))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rules: a number's own outcome first, else the mix.
#[derive(Debug, Clone)]
pub struct Outcomes {
    by_number: HashMap<String, Outcome>,
    /// Weights in `Outcome::ALL` order.
    weights: [u32; 4],
    /// Calls given each outcome by the mix so far.
    given: [u64; 4],
}

impl Default for Outcomes {
    fn default() -> Self {
        Self {
            by_number: HashMap::new(),
            weights: [1, 0, 0, 0],
            given: [0; 4],
        }
    }
}

impl Outcomes {
    /// `answered=70,no-answer=20,busy=10` (weights, any scale; missing outcomes weigh 0).
    pub fn set_mix(&mut self, spec: &str) -> Result<(), String> {
        let mut weights = [0u32; 4];
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected OUTCOME=WEIGHT"))?;
            let outcome = Outcome::parse(name)?;
            weights[outcome as usize] = weight
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the weight is not a whole number"))?;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err(format!("{spec:?}: every weight is 0"));
        }
        self.weights = weights;
        self.given = [0; 4];
        Ok(())
    }

    /// `+15550001111=busy`: calls to this number always end so.
    pub fn set_for_number(&mut self, spec: &str) -> Result<(), String> {
        let (number, outcome) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected NUMBER=OUTCOME"))?;
        self.by_number
            .insert(number.trim().to_owned(), Outcome::parse(outcome)?);
        Ok(())
    }

    pub fn mix(&self) -> String {
        Outcome::ALL
            .iter()
            .zip(self.weights)
            .filter(|(_, w)| *w > 0)
            .map(|(o, w)| format!("{o}={w}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The outcome of the next call to `to`. By the mix, each call goes to the outcome furthest
    /// behind its share so far: after n calls each outcome has its share of n to within one call,
    /// in the same order every run.
    pub fn pick(&mut self, to: &str) -> Outcome {
        if let Some(outcome) = self.by_number.get(to) {
            return *outcome;
        }
        let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        let n = self.given.iter().sum::<u64>() + 1;
        // Deficit of outcome i after n calls: n * w_i / total - given_i, compared scaled by total.
        let best = (0..4)
            .filter(|i| self.weights[*i] > 0)
            .max_by_key(|i| {
                let owed = i128::from(n) * i128::from(self.weights[*i]);
                let had = i128::from(self.given[*i]) * i128::from(total);
                // Ties go to the earlier outcome in ALL: max_by_key keeps the last maximum.
                (owed - had, -(*i as i128))
            })
            .unwrap_or(0);
        self.given[best] += 1;
        Outcome::ALL[best]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_gives_each_outcome_its_share_in_a_fixed_order() {
        let mut outcomes = Outcomes::default();
        outcomes.set_mix("answered=70,no-answer=30").unwrap();
        let picked: Vec<Outcome> = (0..10).map(|_| outcomes.pick("+1")).collect();
        assert_eq!(
            picked.iter().filter(|o| **o == Outcome::NoAnswer).count(),
            3
        );
        assert_eq!(picked[0], Outcome::Answered);
        let mut again = Outcomes::default();
        again.set_mix("answered=70,no-answer=30").unwrap();
        assert_eq!(
            picked,
            (0..10).map(|_| again.pick("+1")).collect::<Vec<_>>()
        );

        outcomes.set_mix("answered=1,busy=1,failed=2").unwrap();
        let mut counts = HashMap::new();
        for _ in 0..2000 {
            *counts.entry(outcomes.pick("+1")).or_insert(0) += 1;
        }
        assert_eq!(counts[&Outcome::Answered], 500);
        assert_eq!(counts[&Outcome::Busy], 500);
        assert_eq!(counts[&Outcome::Failed], 1000);
        assert!(!counts.contains_key(&Outcome::NoAnswer));
        assert_eq!(outcomes.mix(), "answered=1,busy=1,failed=2");
    }

    #[test]
    fn a_number_of_its_own_overrides_the_mix() {
        let mut outcomes = Outcomes::default();
        outcomes.set_for_number("+15550001111=busy").unwrap();
        assert_eq!(outcomes.pick("+15550001111"), Outcome::Busy);
        assert_eq!(outcomes.pick("+15550002222"), Outcome::Answered);
        assert!(outcomes.set_for_number("+1=maybe").is_err());
        assert!(outcomes.set_mix("answered=0").is_err());
        assert!(outcomes.set_mix("ringing=1").is_err());
    }
}
