%% @doc The processes a generic pool runs `{M, F, A}' in, one per worker.
%% The NIF decides which worker runs what and when; an executor only applies
%% and reports, so a crashing MFA never takes the executor down.
-module(mongoose_native_executor).
-behaviour(supervisor).
-export([start_sup/2, start_link/2, init/1, executor/3]).

start_sup(Executors, N) ->
    supervisor:start_link(?MODULE, {Executors, N}).

init({Executors, N}) ->
    Children = [#{id => I, start => {?MODULE, start_link, [Executors, I]}}
                || I <- lists:seq(0, N - 1)],
    {ok, {#{strategy => one_for_one, intensity => 100, period => 1}, Children}}.

start_link(Executors, Index) ->
    proc_lib:start_link(?MODULE, executor, [self(), Executors, Index]).

executor(Parent, Executors, Index) ->
    ok = mongoose_native_nif:generic_attach(Executors, Index, self()),
    proc_lib:init_ack(Parent, {ok, self()}),
    loop().

loop() ->
    receive
        {mongoose_native_run, Done, Request} ->
            mongoose_native_nif:generic_done(Done, run(Request)),
            loop();
        _ ->
            loop()
    end.

run({M, F, A}) when is_atom(M), is_atom(F), is_list(A) ->
    try {ok, erlang:apply(M, F, A)}
    catch Class:Reason:Stack -> {raised, Class, Reason, Stack}
    end;
run(Other) ->
    {raised, error, {bad_request, {expected_mfa, Other}}, []}.
