#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mnist_api_fuzz::targets::multipart(data));
