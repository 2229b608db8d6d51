# micropython-lib's old name for requests.
from requests import *  # noqa: F403
