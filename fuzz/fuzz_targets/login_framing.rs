//! Message framing as the upstream login reads it (`read_message` with the login bound):
//! any byte stream is a sequence of messages, a framing error, or the end, never a panic
//! or an allocation beyond the bound. After login the relay inspects nothing, so this is
//! the only framing code a peer's bytes reach.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_iam_proxy::backend::MAX_LOGIN_MESSAGE;
use redshift_iam_proxy::net::framing::read_message;

fuzz_target!(|data: &[u8]| {
    futures::executor::block_on(async {
        let mut input = data;
        loop {
            let before = input.len();
            match read_message(&mut input, MAX_LOGIN_MESSAGE).await {
                Ok(m) => {
                    assert!(m.body.len() <= MAX_LOGIN_MESSAGE);
                    assert_eq!(before - input.len(), m.body.len() + 5);
                }
                Err(_) => return,
            }
        }
    });
});
