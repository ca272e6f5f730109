"""The operator station: a web app on the line's tablet to explain stops and enter scrap.

``plantstream station --config plant.yaml`` serves it (:mod:`plantstream.cli.station`);
``plantstream run`` starts it when the config's ``station.enabled`` is true. See docs/station.md.
"""
