//! The raylet's wait queue, split by scheduling class (resource shape and
//! strategy) like Ray's: when the head of a class cannot run, nothing behind
//! it in the same class can either, so a dispatch pass costs one check per
//! class instead of one per queued task.

use std::collections::VecDeque;

/// FIFO queues per class, classes in order of first arrival.
#[derive(Debug)]
pub struct ClassQueue<T> {
    classes: Vec<(String, VecDeque<T>)>,
    len: usize,
}

impl<T> Default for ClassQueue<T> {
    fn default() -> Self {
        ClassQueue {
            classes: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ClassQueue<T> {
    fn class(&mut self, key: String) -> &mut VecDeque<T> {
        let i = match self.classes.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.classes.push((key, VecDeque::new()));
                self.classes.len() - 1
            }
        };
        &mut self.classes[i].1
    }

    /// Appends to its class.
    pub fn push_back(&mut self, key: String, t: T) {
        self.class(key).push_back(t);
        self.len += 1;
    }

    /// Puts first in its class (a retry keeps its turn).
    pub fn push_front(&mut self, key: String, t: T) {
        self.class(key).push_front(t);
        self.len += 1;
    }

    /// Queued items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every queued item.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.classes.iter().flat_map(|(_, q)| q.iter())
    }

    /// Number of classes with work.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// The head of class `i`.
    pub fn front(&self, i: usize) -> Option<&T> {
        self.classes.get(i).and_then(|(_, q)| q.front())
    }

    /// Takes the head of class `i`.
    pub fn pop_front(&mut self, i: usize) -> Option<T> {
        let t = self.classes.get_mut(i)?.1.pop_front()?;
        self.len -= 1;
        Some(t)
    }

    /// Removes the first item matching `f`.
    pub fn remove_first(&mut self, mut f: impl FnMut(&T) -> bool) -> Option<T> {
        for (_, q) in &mut self.classes {
            if let Some(pos) = q.iter().position(&mut f) {
                self.len -= 1;
                return q.remove(pos);
            }
        }
        None
    }

    /// Keeps the items for which `f` is true.
    pub fn retain(&mut self, mut f: impl FnMut(&T) -> bool) {
        for (_, q) in &mut self.classes {
            q.retain(&mut f);
        }
        self.len = self.classes.iter().map(|(_, q)| q.len()).sum();
    }

    /// Removes and returns the items for which `f` is true.
    pub fn take_where(&mut self, mut f: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut taken = Vec::new();
        for (_, q) in &mut self.classes {
            let (take, keep) = std::mem::take(q).into_iter().partition(&mut f);
            *q = keep;
            taken.extend::<VecDeque<T>>(take);
        }
        self.len -= taken.len();
        taken
    }

    /// Drops empty classes (keeps the scan short).
    pub fn compact(&mut self) {
        self.classes.retain(|(_, q)| !q.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_within_a_class_and_retries_go_first() {
        let mut q = ClassQueue::default();
        q.push_back("a".into(), 1);
        q.push_back("b".into(), 2);
        q.push_back("a".into(), 3);
        q.push_front("a".into(), 0);
        assert_eq!(q.len(), 4);
        assert_eq!(q.pop_front(0), Some(0));
        assert_eq!(q.pop_front(0), Some(1));
        assert_eq!(q.front(1), Some(&2));
        assert_eq!(q.remove_first(|x| *x == 3), Some(3));
        q.push_back("c".into(), 5);
        assert_eq!(q.take_where(|x| *x == 5), vec![5]);
        assert_eq!(q.len(), 1);
        q.retain(|x| *x != 2);
        assert!(q.is_empty());
        q.compact();
        assert_eq!(q.class_count(), 0);
    }
}
