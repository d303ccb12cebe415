"""Reports written as files: the drift report of the newest requests and the HTML report of an experiment."""
