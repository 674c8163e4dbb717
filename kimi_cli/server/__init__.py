"""`kimi serve`: the model kept loaded behind an OpenAI-compatible HTTP API (Starlette + uvicorn).

`config` (address, key, limits), `protocol` (request parsing and reply formatting, pure),
`scheduler` (one generation at a time, FIFO), `app` (the routes), `main` (bind, publish the
`kimi_cli.discovery` file, run). It speaks HTTP and never prints Rich output.
"""
