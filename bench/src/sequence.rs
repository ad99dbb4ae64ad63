//! The hot counter's check: n INCRs of one fresh key must have been answered exactly 1, 2, …, n — every
//! value once, none missing, none outside — and each client's own replies must rise (its INCRs were
//! sent one after another, so each must see a larger value than its previous one).

/// What was wrong with a set of replies; empty when they are exactly 1..=n.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// How many replies were checked (the n wanted).
    pub expected: u64,
    /// Values answered more than once (each extra answer counted), with up to 5 examples.
    pub duplicates: u64,
    pub duplicate_examples: Vec<i64>,
    /// Values of 1..=n nobody was answered, with up to 5 examples.
    pub missing: u64,
    pub missing_examples: Vec<i64>,
    /// Replies outside 1..=n, with up to 5 examples.
    pub out_of_range: u64,
    pub out_of_range_examples: Vec<i64>,
    /// Clients whose own replies did not rise, with up to 5 examples (client, previous, next).
    pub not_rising: u64,
    pub not_rising_examples: Vec<(usize, i64, i64)>,
}

const EXAMPLES: usize = 5;

impl Verdict {
    pub fn ok(&self) -> bool {
        self.duplicates == 0 && self.missing == 0 && self.out_of_range == 0 && self.not_rising == 0
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok() {
            return write!(f, "replies are exactly 1..{} (each once, each client's rising)", self.expected);
        }
        write!(f, "replies are NOT exactly 1..{}:", self.expected)?;
        if self.duplicates > 0 {
            write!(f, " {} duplicate(s) e.g. {:?};", self.duplicates, self.duplicate_examples)?;
        }
        if self.missing > 0 {
            write!(f, " {} missing e.g. {:?};", self.missing, self.missing_examples)?;
        }
        if self.out_of_range > 0 {
            write!(f, " {} out of range e.g. {:?};", self.out_of_range, self.out_of_range_examples)?;
        }
        if self.not_rising > 0 {
            write!(
                f,
                " {} client step(s) not rising e.g. (client, before, after) {:?};",
                self.not_rising, self.not_rising_examples
            )?;
        }
        Ok(())
    }
}

/// Checks the replies each client got (in the order it got them) against 1..=n.
pub fn check(per_client: &[Vec<i64>], n: u64) -> Verdict {
    let mut v = Verdict { expected: n, ..Verdict::default() };
    let mut seen = vec![false; n as usize];
    for (client, replies) in per_client.iter().enumerate() {
        for (i, &r) in replies.iter().enumerate() {
            if i > 0 && replies[i - 1] >= r {
                v.not_rising += 1;
                if v.not_rising_examples.len() < EXAMPLES {
                    v.not_rising_examples.push((client, replies[i - 1], r));
                }
            }
            if r < 1 || r as u64 > n {
                v.out_of_range += 1;
                if v.out_of_range_examples.len() < EXAMPLES {
                    v.out_of_range_examples.push(r);
                }
                continue;
            }
            let slot = &mut seen[(r - 1) as usize];
            if *slot {
                v.duplicates += 1;
                if v.duplicate_examples.len() < EXAMPLES {
                    v.duplicate_examples.push(r);
                }
            }
            *slot = true;
        }
    }
    for (i, &s) in seen.iter().enumerate() {
        if !s {
            v.missing += 1;
            if v.missing_examples.len() < EXAMPLES {
                v.missing_examples.push(i as i64 + 1);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_clients_with_every_value_once_pass() {
        let v = check(&[vec![1, 4, 5], vec![2, 3, 6]], 6);
        assert!(v.ok(), "{v}");
        assert_eq!(v.to_string(), "replies are exactly 1..6 (each once, each client's rising)");
    }

    #[test]
    fn no_replies_for_no_requests() {
        assert!(check(&[vec![], vec![]], 0).ok());
    }

    #[test]
    fn a_duplicate_is_also_a_gap() {
        let v = check(&[vec![1, 2], vec![2]], 3);
        assert!(!v.ok());
        assert_eq!((v.duplicates, v.missing, v.out_of_range), (1, 1, 0));
        assert_eq!(v.duplicate_examples, vec![2]);
        assert_eq!(v.missing_examples, vec![3]);
    }

    #[test]
    fn values_beyond_n_are_out_of_range() {
        // e.g. the key was not fresh, or an INCR was applied twice
        let v = check(&[vec![1, 2, 4]], 3);
        assert_eq!((v.duplicates, v.missing, v.out_of_range), (0, 1, 1));
        assert_eq!(v.out_of_range_examples, vec![4]);
        let v = check(&[vec![0, -1]], 2);
        assert_eq!((v.out_of_range, v.missing), (2, 2));
        assert!(v.to_string().contains("2 out of range"), "{v}");
    }

    #[test]
    fn a_client_seeing_its_counter_go_back_fails() {
        // every value once, but client 0 saw 3 after 4: its second INCR was ordered before its first
        let v = check(&[vec![4, 3], vec![1, 2]], 4);
        assert_eq!((v.duplicates, v.missing, v.out_of_range, v.not_rising), (0, 0, 0, 1));
        assert_eq!(v.not_rising_examples, vec![(0, 4, 3)]);
        assert!(!v.ok());
    }

    #[test]
    fn examples_are_capped() {
        let v = check(&[vec![]], 100);
        assert_eq!(v.missing, 100);
        assert_eq!(v.missing_examples, vec![1, 2, 3, 4, 5]);
    }
}
