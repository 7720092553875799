//! RuntimeData frame wire format (filled in next).
