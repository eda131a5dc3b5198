"""Everything after the response: the body-free event of each request.

For now the event is logged (one line per request) and counted; the metering issue
adds the bounded queue, the COPY drainer and receipts behind the same `finish`.
"""
