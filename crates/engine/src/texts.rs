//! The texts of one request, tokenized once.
//!
//! The HTTP layer (or the command line) tokenizes a request's texts as soon as they are accepted
//! ([`crate::Engine::encode`]); from there on only token ids travel: to the gateway actor, to every
//! attempt (shared behind an `Arc`, never copied), to a remote node (as ids, so it does not
//! tokenize again) and to the model thread. The ids of all texts sit in one vector with an end
//! offset per text: one allocation per request, and the wire format is the same two vectors.

/// Token ids of a request's texts, [CLS] and [SEP] included, each truncated to the model's
/// `max_length`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncodedTexts {
    /// Every text's ids, back to back.
    ids: Vec<u32>,
    /// Where each text's ids end in `ids` (exclusive): non-decreasing, the last equals `ids.len()`.
    ends: Vec<u32>,
}

/// Why ids from another node were refused (before they reach a queue or ONNX Runtime).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTexts {
    /// No texts, or more than the node accepts in one request.
    #[error("{count} texts in one request; the limit is {max} (`limits.max_texts`)")]
    Count {
        /// Texts sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The end offsets do not describe the id vector.
    #[error("the text boundaries do not match the token ids")]
    Boundaries,
    /// A text has no ids, or more than the model's window.
    #[error("text {index} has {tokens} tokens; the model takes 1 to {max}")]
    Length {
        /// Position in the request.
        index: usize,
        /// Its tokens.
        tokens: usize,
        /// The model's `max_length`.
        max: usize,
    },
    /// An id outside the model's vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    Id {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
}

impl EncodedTexts {
    /// From one id vector per text.
    pub fn from_texts<I: IntoIterator<Item = Vec<u32>>>(texts: I) -> Self {
        let mut encoded = Self::default();
        for ids in texts {
            encoded.push(&ids);
        }
        encoded
    }

    /// Appends one text's ids.
    pub fn push(&mut self, ids: &[u32]) {
        self.ids.extend_from_slice(ids);
        self.ends.push(self.ids.len() as u32);
    }

    /// Texts.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No texts.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The ids of text `index`.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn get(&self, index: usize) -> &[u32] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        &self.ids[start..self.ends[index] as usize]
    }

    /// Every text's ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u32]> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Tokens of every text together.
    pub fn total_tokens(&self) -> usize {
        self.ids.len()
    }

    /// The two vectors, for the wire.
    pub(crate) fn into_parts(self) -> (Vec<u32>, Vec<u32>) {
        (self.ids, self.ends)
    }

    /// From the wire: the two vectors, if they describe texts at all (the end offsets rise and
    /// the last is the number of ids). Whether the texts suit this node's model and limits is
    /// [`EncodedTexts::check`]'s business, done by the inference actor for every request.
    pub(crate) fn from_parts(ids: Vec<u32>, ends: Vec<u32>) -> Result<Self, InvalidTexts> {
        let rising = ends.windows(2).all(|w| w[0] <= w[1]);
        if !rising || ends.last().map_or(!ids.is_empty(), |&last| last as usize != ids.len()) {
            return Err(InvalidTexts::Boundaries);
        }
        Ok(Self { ids, ends })
    }

    /// Whether these texts can be queued here: 1 to `max_texts` texts of 1 to `max_length` ids,
    /// every id below `vocab`. Texts tokenized on this node always pass; ids from another node
    /// (or a forger) may not.
    pub fn check(&self, max_texts: usize, max_length: usize, vocab: usize) -> Result<(), InvalidTexts> {
        if self.is_empty() || self.len() > max_texts {
            return Err(InvalidTexts::Count { count: self.len(), max: max_texts });
        }
        for (index, ids) in self.iter().enumerate() {
            if ids.is_empty() || ids.len() > max_length {
                return Err(InvalidTexts::Length { index, tokens: ids.len(), max: max_length });
            }
        }
        match self.ids.iter().find(|&&id| id as usize >= vocab) {
            Some(&id) => Err(InvalidTexts::Id { id, vocab }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn texts_come_back_in_order() {
        let texts = EncodedTexts::from_texts([vec![101, 7, 102], vec![101, 102], vec![101, 8, 9, 102]]);
        assert_eq!(texts.len(), 3);
        assert_eq!(texts.get(1), &[101, 102]);
        assert_eq!(texts.iter().map(<[u32]>::len).collect::<Vec<_>>(), [3, 2, 4]);
        assert_eq!(texts.total_tokens(), 9);
    }

    #[test]
    fn forged_parts_are_refused() {
        let ok = |ids: Vec<u32>, ends: Vec<u32>| {
            EncodedTexts::from_parts(ids, ends).and_then(|texts| texts.check(4, 8, 100).map(|()| texts))
        };
        assert!(ok(vec![1, 2, 3], vec![1, 3]).is_ok());
        assert_eq!(ok(vec![], vec![]), Err(InvalidTexts::Count { count: 0, max: 4 }));
        assert_eq!(ok(vec![1; 5], vec![1, 2, 3, 4, 5]), Err(InvalidTexts::Count { count: 5, max: 4 }));
        assert_eq!(ok(vec![1, 2], vec![1, 3]), Err(InvalidTexts::Boundaries), "last end past the ids");
        assert_eq!(ok(vec![1, 2, 3], vec![2, 1, 3]), Err(InvalidTexts::Boundaries), "decreasing");
        assert_eq!(ok(vec![1, 2], vec![]), Err(InvalidTexts::Boundaries), "ids without texts");
        assert_eq!(ok(vec![1, 2], vec![0, 2]), Err(InvalidTexts::Length { index: 0, tokens: 0, max: 8 }));
        assert_eq!(ok(vec![1; 9], vec![9]), Err(InvalidTexts::Length { index: 0, tokens: 9, max: 8 }));
        assert_eq!(ok(vec![1, 100], vec![2]), Err(InvalidTexts::Id { id: 100, vocab: 100 }));
    }

    proptest! {
        #[test]
        fn parts_round_trip(texts in prop::collection::vec(prop::collection::vec(0u32..50, 1..8), 1..6)) {
            let encoded = EncodedTexts::from_texts(texts.clone());
            let (ids, ends) = encoded.clone().into_parts();
            let back = EncodedTexts::from_parts(ids, ends).unwrap();
            prop_assert!(back.check(8, 8, 50).is_ok());
            prop_assert_eq!(&back, &encoded);
            prop_assert_eq!(back.iter().map(<[u32]>::to_vec).collect::<Vec<_>>(), texts);
        }

        #[test]
        fn any_parts_are_refused_or_consistent(
            ids in prop::collection::vec(0u32..60, 0..20), ends in prop::collection::vec(0u32..25, 0..6),
        ) {
            if let Ok(texts) = EncodedTexts::from_parts(ids, ends) {
                // Structurally sound parts never panic when read.
                let total: usize = texts.iter().map(<[u32]>::len).sum();
                prop_assert_eq!(total, texts.total_tokens());
                if texts.check(8, 8, 50).is_ok() {
                    prop_assert!(texts.iter().all(|t| !t.is_empty() && t.len() <= 8 && t.iter().all(|&id| id < 50)));
                }
            }
        }
    }
}
