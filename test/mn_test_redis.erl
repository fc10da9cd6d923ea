%% Starts and stops private redis-server instances on spare loopback ports,
%% for tests that kill the server or need a password.
-module(mn_test_redis).
-export([start/2, stop/1, signal/2, wait_down/1]).

%% Extra is a list of extra command-line arguments, e.g. ["--requirepass", "x"].
start(Port, Extra) ->
    Args = ["--port", integer_to_list(Port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "yes",
            "--pidfile", pidfile(Port), "--logfile", "/tmp/mn_test_redis_" ++ integer_to_list(Port) ++ ".log"]
           ++ Extra,
    Cmd = string:join(["redis-server" | [quote(A) || A <- Args]], " "),
    _ = os:cmd(Cmd),
    wait_up(Port, 50).

stop(Port) ->
    case file:read_file(pidfile(Port)) of
        {ok, Pid} -> _ = os:cmd("kill -9 " ++ string:trim(binary_to_list(Pid)));
        _ -> ok
    end,
    wait_down(Port).

%% Sends the server a signal by name ("STOP", "CONT").
signal(Port, Signal) ->
    {ok, Pid} = file:read_file(pidfile(Port)),
    _ = os:cmd("kill -" ++ Signal ++ " " ++ string:trim(binary_to_list(Pid))),
    ok.

wait_down(Port) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [], 100) of
        {ok, S} -> gen_tcp:close(S), timer:sleep(50), wait_down(Port);
        {error, _} -> ok
    end.

wait_up(_Port, 0) -> {error, redis_did_not_start};
wait_up(Port, N) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [], 100) of
        {ok, S} -> gen_tcp:close(S), ok;
        {error, _} -> timer:sleep(100), wait_up(Port, N - 1)
    end.

pidfile(Port) -> "/tmp/mn_test_redis_" ++ integer_to_list(Port) ++ ".pid".

quote(A) -> "'" ++ A ++ "'".
