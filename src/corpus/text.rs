//! Raw text to sentences of words with character offsets.
