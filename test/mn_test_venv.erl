%% @doc The protocol test servers of test/servers/ and the independent
%% Python clients that check them (elastic_SUITE, riak_SUITE,
%% cassandra_SUITE), run with the Python of the virtualenv scripts/setup.sh
%% makes: /var/cache/mongoose_native/venv, or MN_VENV.
-module(mn_test_venv).
-export([python/0, start_server/3, ask/2, stop_server/1, client_passes/2]).

-include_lib("stdlib/include/assert.hrl").

-type server() :: #{owner := pid(), port := inet:port_number(),
                    control => inet:port_number()}.
-export_type([server/0]).

%% @doc The virtualenv's Python; fails the suite when setup.sh has not made it.
-spec python() -> file:filename().
python() ->
    Venv = case os:getenv("MN_VENV") of
               false -> "/var/cache/mongoose_native/venv";
               Dir -> Dir
           end,
    Python = filename:join(Venv, "bin/python"),
    case filelib:is_regular(Python) of
        true -> Python;
        false -> ct:fail("~s missing: run scripts/setup.sh", [Python])
    end.

%% @doc Starts test/servers/Script with Args under a process of its own, so
%% that it outlives the caller (init_per_group's process); the server exits
%% when its standard input (the port) closes, at stop_server/1. It prints
%% `PORT N' and, when Announced has `control', `CONTROL N' (its control port).
-spec start_server(string(), [string()], [port | control]) -> server().
start_server(Script, Args, Announced) ->
    Self = self(),
    Owner = spawn(fun() ->
        Port = open_port({spawn_executable, python()},
                         [{args, [script(Script) | Args]}, {line, 200}, binary, exit_status]),
        Self ! {self(), read_ports(Port, Announced, #{})},
        serve(Script, Port)
    end),
    receive
        {Owner, Ports} when map_size(Ports) =:= length(Announced) -> Ports#{owner => Owner};
        {Owner, _} -> ct:fail("~s did not start", [Script])
    end.

read_ports(Port, Announced, Acc) ->
    case lists:all(fun(Key) -> maps:is_key(Key, Acc) end, Announced) of
        true -> Acc;
        false ->
            receive
                {Port, {data, {eol, <<"PORT ", N/binary>>}}} ->
                    read_ports(Port, Announced, Acc#{port => binary_to_integer(N)});
                {Port, {data, {eol, <<"CONTROL ", N/binary>>}}} ->
                    read_ports(Port, Announced, Acc#{control => binary_to_integer(N)});
                {Port, {data, _}} -> read_ports(Port, Announced, Acc)
            after 10000 -> Acc
            end
    end.

%% Commands go to the server's standard input, a line each, and its `OK...'
%% line answers (riak_server.py's faults).
serve(Script, Port) ->
    receive
        {command, From, Line} ->
            port_command(Port, [Line, $\n]),
            receive {Port, {data, {eol, <<"OK", Rest/binary>>}}} -> From ! {self(), {ok, Rest}}
            after 5000 -> From ! {self(), no_answer}
            end,
            serve(Script, Port);
        {Port, {data, _}} -> serve(Script, Port);
        {Port, {exit_status, S}} -> ct:pal("~s exited with ~p", [Script, S]);
        stop -> port_close(Port)
    end.

%% @doc The rest of the server's `OK' line answering the command Line.
-spec ask(server(), iodata()) -> {ok, binary()}.
ask(#{owner := Owner}, Line) ->
    Owner ! {command, self(), Line},
    receive
        {Owner, {ok, Answer}} -> {ok, Answer};
        {Owner, no_answer} -> ct:fail({no_answer_to, Line})
    after 6000 -> ct:fail({no_answer_to, Line})
    end.

-spec stop_server(server()) -> ok.
stop_server(#{owner := Owner}) ->
    Owner ! stop,
    ok.

%% @doc Runs the client check test/servers/Script with Args and asserts it
%% passed: exit status 0 after printing `passed against'.
-spec client_passes(string(), [string()]) -> ok.
client_passes(Script, Args) ->
    Port = open_port({spawn_executable, python()},
                     [{args, ["-W", "ignore", script(Script) | Args]},
                      exit_status, stderr_to_stdout, binary]),
    {Status, Output} = collect(Port, <<>>),
    ct:log("~s", [Output]),
    ?assertEqual({0, passed}, {Status, case binary:match(Output, <<"passed against">>) of
                                           nomatch -> Output;
                                           _ -> passed
                                       end}),
    ok.

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, S}} -> {S, Acc}
    after 60000 -> {timeout, Acc}
    end.

script(Name) ->
    Source = proplists:get_value(source, ?MODULE:module_info(compile)),
    filename:join([filename:dirname(Source), "servers", Name]).
