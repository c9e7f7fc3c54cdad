"""``lt board``: SwanLab's local board for any run folders, fed from the folders (see :mod:`.store`)."""

from .serve import board_answers, serve, start_board
from .store import STATE, BoardStore, PassResult, board_status, default_store, experiment_folder

__all__ = ["BoardStore", "PassResult", "STATE", "board_answers", "board_status", "default_store",
           "experiment_folder", "serve", "start_board"]
