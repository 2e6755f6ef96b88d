//! The order the adapter tells its outcomes in as the APs end: the list's,
//! each as soon as it and every one before it are known, so that a caller
//! that kills the adapter part way (the daemon at `ike_hook_timeout`) has
//! every line up to the first AP still open. Sans-IO but for the channel's
//! non-blocking send.
//!
//! Owns: which outcomes have gone. Must not: decide an outcome.

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::recovery::ApOutcome;

/// Where outcomes go as they end, in the list's order.
pub(super) struct Reporter<'a> {
    to: Option<&'a mpsc::UnboundedSender<ApOutcome>>,
    /// Outcomes known but not yet sent (an earlier one is still open).
    known: Vec<Option<ApOutcome>>,
    /// The first entry not sent yet.
    next: usize,
    /// Entries that take another's outcome (the same connection name):
    /// first -> (later index, its address).
    copies: HashMap<usize, Vec<(usize, String)>>,
}

impl<'a> Reporter<'a> {
    /// For a list of `entries`; `to: None` sends nothing.
    pub(super) fn new(to: Option<&'a mpsc::UnboundedSender<ApOutcome>>, entries: usize) -> Self {
        Self {
            to,
            known: vec![None; entries],
            next: 0,
            copies: HashMap::new(),
        }
    }

    /// Entry `copy` takes the outcome of entry `first`, under `address`.
    pub(super) fn copy_of(&mut self, copy: usize, first: usize, address: String) {
        self.copies.entry(first).or_default().push((copy, address));
    }

    /// Entry `index` has ended: what is now ready goes out, in order. An
    /// entry told twice is sent once.
    pub(super) fn send(&mut self, index: usize, outcome: &ApOutcome) {
        let Some(to) = self.to else { return };
        if index < self.next {
            return;
        }
        if let Some(slot) = self.known.get_mut(index) {
            slot.get_or_insert_with(|| outcome.clone());
        }
        for (copy, address) in self.copies.remove(&index).unwrap_or_default() {
            if let Some(slot) = self.known.get_mut(copy) {
                let mut outcome = outcome.clone();
                outcome.address = address;
                slot.get_or_insert(outcome);
            }
        }
        while let Some(ready) = self.known.get_mut(self.next).and_then(Option::take) {
            let _ = to.send(ready);
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(address: &str) -> ApOutcome {
        ApOutcome {
            address: address.to_string(),
            ok: true,
            took_ms: 1.0,
            error: None,
            result: Some(crate::recovery::ApResult::Ok),
        }
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<ApOutcome>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|o| o.address)
            .collect()
    }

    #[test]
    fn outcomes_go_out_in_the_lists_order_as_soon_as_all_before_are_known() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut report = Reporter::new(Some(&tx), 4);
        // Entry 3 shares entry 1's connection.
        report.copy_of(3, 1, "d".to_string());
        report.send(2, &outcome("c"));
        assert!(drain(&mut rx).is_empty(), "entry 0 is still open");
        report.send(0, &outcome("a"));
        assert_eq!(drain(&mut rx), ["a"]);
        report.send(1, &outcome("b"));
        assert_eq!(
            drain(&mut rx),
            ["b", "c", "d"],
            "the copy goes with its first"
        );
        // Told again (the final flush): nothing twice.
        for (i, address) in ["a", "b", "c", "d"].iter().enumerate() {
            report.send(i, &outcome(address));
        }
        assert!(drain(&mut rx).is_empty());
    }
}
