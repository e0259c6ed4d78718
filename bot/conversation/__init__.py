"""Conversations: what the model is sent (`context`, `tokens`), the answers being written and
waiting (`runs`), several answers to choose from (`alternatives`), and the turn service that
answers and remembers (`service`)."""
