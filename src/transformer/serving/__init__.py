"""A trained run shown to people: the HTTP API and the attention explorer.

    service.py         requests checked, models kept: what the server answers, apart from HTTP
    handler.py         one HTTP request: routed, checked (Host, Origin, body), answered
    server.py          `transformer serve`: the HTTP server on the loopback, its connections
    explorer_page.py   `transformer explore`: the explorer as one offline HTML file
    explorer/          the explorer page itself (HTML, CSS, JavaScript)
    export.py          `transformer export`: the model for CTranslate2
"""
