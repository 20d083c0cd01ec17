"""Dragonfly v1's numbers and names: result codes, statuses, error types, the CDN patterns
and the default ports, as dfget 1.0.6 and the supernode use them."""

from __future__ import annotations

# Supernode -> dfget codes in the envelope.
CODE_SUCCESS = 200
CODE_SYSTEM_ERROR = 500
CODE_PARAM_ERROR = 501
CODE_TARGET_NOT_FOUND = 502
CODE_PEER_FINISH = 600
CODE_PEER_CONTINUE = 601
CODE_PEER_WAIT = 602
CODE_PEER_LIMITED = 603
CODE_SUPER_FAIL = 604
CODE_UNKNOWN_ERROR = 605
CODE_TASK_CONFLICT = 606
CODE_URL_NOT_REACHABLE = 607
CODE_NEED_AUTH = 608
CODE_WAIT_AUTH = 609
CODE_SOURCE_ERROR = 610
CODE_PIECE_REPORT_OK = 611
CODE_PEER_DOWN_OK = 612

# dfget -> supernode `status` and `result` of /peer/task.
STATUS_START = 700
STATUS_RUNNING = 701
STATUS_FINISHED = 702
RESULT_FAILED = 500
RESULT_SUCCESS = 501
RESULT_INVALID = 502
RESULT_SEMI_SUCCESS = 503

# Error types of /peer/piece/error.
ERROR_FILE_NOT_EXIST = "FILE_NOT_EXIST"
ERROR_FILE_MD5_NOT_MATCH = "FILE_MD5_NOT_MATCH"

# Why a download went to the source (``backsourceReason`` of /task/metrics).
REASON_NONE = 0
REASON_REGISTER_FAILED = 1
REASON_P2P_ERROR = 3

CDN_CID_PREFIX = "cdnnode:"  # the cid of a supernode's CDN as a piece holder
CDN_SOURCE_SUPERNODE = "supernode"
CDN_SOURCE_SOURCE = "source"

DEFAULT_SUPERNODE_PORT = 8002
DEFAULT_DOWNLOAD_PORT = 8001
JSON_REQUEST_CONTENT_TYPE = "application/json;charset=utf-8"
