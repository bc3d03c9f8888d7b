//! PLACEHOLDER until the header rewriter lands from its branch.
use super::extract::Offsets;
use super::field::Field;

#[derive(Debug)]
pub struct RewriteError;

pub fn set_field(
    _f: &mut [u8],
    _o: &Offsets,
    _field: Field,
    _v: u128,
    _m: u128,
) -> Result<(), RewriteError> {
    Err(RewriteError)
}
pub fn dec_ttl(_f: &mut [u8], _o: &Offsets) -> Result<(), RewriteError> {
    Err(RewriteError)
}
pub fn push_vlan(_b: &mut [u8], _len: usize, _tpid: u16) -> Result<usize, RewriteError> {
    Err(RewriteError)
}
pub fn pop_vlan(_b: &mut [u8], _len: usize) -> Result<usize, RewriteError> {
    Err(RewriteError)
}
