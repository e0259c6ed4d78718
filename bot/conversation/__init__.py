"""Conversations: what the model is sent (`context`, `tokens`), the answers being written and
waiting (`runs`), and the turn service that answers and remembers (`service`)."""
